"""save_backbone / load_backbone: round trip, weights-only loading, errors."""

import pytest
import torch

from skfewshot.models import Conv4, ResNet12, load_backbone, save_backbone


@pytest.mark.parametrize(
    "make", [lambda: Conv4(in_channels=1, hidden=8), lambda: ResNet12(in_channels=1)]
)
def test_round_trip_gives_identical_outputs(make, tmp_path):
    torch.manual_seed(0)
    net = make().eval()
    path = tmp_path / "net.pt"
    save_backbone(net, path, input_shape=(1, 28, 28))
    loaded, meta = load_backbone(path)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert meta["input_shape"] == (1, 28, 28)
    assert not loaded.training
    # the file is plain tensors and values: torch's safe loader reads it
    assert torch.load(path, weights_only=True)["architecture"] == type(net).__name__


def test_save_rejects_foreign_modules(tmp_path):
    with pytest.raises(TypeError, match="got Linear; save module.state_dict"):
        save_backbone(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a skfewshot backbone file"):
        load_backbone(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable skfewshot backbone file"):
        load_backbone(tmp_path / "junk.pt")
