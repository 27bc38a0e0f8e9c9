import pytest
import torch

from fer_train.models import MODEL_REGISTRY, ElementPReLU, count_parameters, create_model

EXPECTED_PARAMETERS = {"cnn": 2_414_599, "dnn": 2_500_103}


def test_study_parameter_counts_are_exact():
    for name, count in EXPECTED_PARAMETERS.items():
        assert count_parameters(create_model(name)) == count


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_registered_model_runs_forward_on_raw_pixels(name):
    model = create_model(name).eval()
    x = torch.randint(0, 256, (3, 1, 48, 48)).float()
    out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_cnn_feature_shapes_follow_the_study():
    model = create_model("cnn").eval()
    x = model.scale(torch.zeros(1, 1, 48, 48))
    shapes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 22, 22), (64, 10, 10), (128, 5, 5)]


def test_element_prelu_has_one_slope_per_element():
    act = ElementPReLU(2, 3, 3)
    with torch.no_grad():
        act.weight.copy_(torch.arange(18.0).reshape(2, 3, 3))
    x = -torch.ones(1, 2, 3, 3)
    assert torch.equal(act(x), -torch.arange(18.0).reshape(1, 2, 3, 3))
    assert torch.equal(act(-x), -x)


def test_torch_free_model_names_match_the_registry():
    from fer_train.constants import MODEL_NAMES

    assert set(MODEL_NAMES) == set(MODEL_REGISTRY)


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: cnn, dnn"):
        create_model("resnet9000")
