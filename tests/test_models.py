import pytest
import torch

from fer_train.models import MODEL_REGISTRY, ElementPReLU, count_parameters, create_model, deployable

EXPECTED_PARAMETERS = {"cnn": 2_414_599, "dnn": 2_500_103, "fernet": 1_174_439}


def test_every_registered_model_has_its_parameter_count_checked():
    assert set(EXPECTED_PARAMETERS) == set(MODEL_REGISTRY)


def test_parameter_counts_are_exact():
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
    from fer_runtime.contract import MODEL_NAMES

    assert set(MODEL_NAMES) == set(MODEL_REGISTRY)


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: cnn, dnn, fernet"):
        create_model("resnet9000")


def _fernet_with_running_statistics() -> torch.nn.Module:
    """A FerNet whose BatchNorm layers hold non-trivial statistics and affine parameters, as after training."""
    torch.manual_seed(0)
    model = create_model("fernet")
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 256, (16, 1, 48, 48), generator=g).float())
    return model.eval()


def test_fused_fernet_has_no_batchnorm_and_the_same_outputs():
    model = _fernet_with_running_statistics()
    fused = deployable(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert count_parameters(fused) < count_parameters(model)  # BN's scale and shift are folded into the conv weights
    x = torch.randint(0, 256, (5, 1, 48, 48), generator=torch.Generator().manual_seed(2)).float()
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not fused.training


def test_deployable_leaves_chain_models_alone():
    model = create_model("cnn")
    assert deployable(model) is model and not model.training
