"""ArcFace: differentiable torch iresnet (identity loss) and the insightface ONNX identity metric."""
import math

import numpy as np
import pytest
import torch

import cff_lib  # noqa: F401
from cff_lib.arcface import (
    IRESNET50,
    ArcFace,
    ArcMarginProduct,
    InsightFaceIdentityMetric,
    IResNet,
    IResNetConfig,
    create_arcface,
    export_onnx,
)

TINY = IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16))


def _randomise_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def arc():
    torch.manual_seed(0)
    return _randomise_bn(create_arcface("synthetic", image_size=112))  # 112: what insightface needs (ONNX tests)


def test_shapes_norms_and_resize(arc):
    for size in (64, 112, 256):
        f = arc(torch.rand(2, 3, size, size) * 2 - 1)
        assert f.shape == (2, 512)
        torch.testing.assert_close(f.norm(dim=-1), torch.ones(2))


def test_gradient_reaches_pixels_but_not_frozen_weights(arc):
    arc.freeze()
    parent = torch.nn.ModuleDict({"arc": arc}).train()
    assert not arc.training  # a frozen module ignores a parent's .train()
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    arc(x).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in arc.parameters())
    arc.unfreeze()
    del parent


@pytest.mark.parametrize("bad", [torch.zeros(1, 4, 112, 112), torch.zeros(1, 3, 112, 112, dtype=torch.uint8),
                                 torch.full((1, 3, 112, 112), -1.5), torch.zeros(1, 3, 112, 100)])
def test_bad_images(arc, bad):
    with pytest.raises(ValueError, match="images"):
        arc(bad)


def test_iresnet50_matches_arcface_torch_layout():
    with torch.device("meta"):
        net = IResNet(IRESNET50)
    sd = net.state_dict()
    assert abs(sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k)
               - 43.59e6) < 0.05e6
    for key, shape in [("conv1.weight", (64, 3, 3, 3)), ("prelu.weight", (64,)),
                       ("layer1.0.downsample.0.weight", (64, 64, 1, 1)),
                       ("layer3.13.bn3.running_var", (256,)),
                       ("layer4.2.prelu.weight", (512,)), ("fc.weight", (512, 512 * 7 * 7)),
                       ("features.running_mean", (512,)), ("bn2.weight", (512,))]:
        assert tuple(sd[key].shape) == shape, key
    assert len([k for k in sd if k.startswith("layer3.") and k.endswith(".conv1.weight")]) == 14


def test_synthetic_safetensors_round_trip(arc, tmp_path):
    again = create_arcface("synthetic", arc.save(tmp_path / "arc.safetensors"))
    assert again.config == arc.config
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(again(x), arc(x), rtol=0, atol=0)


def test_pth_state_dict_of_a_small_config(tmp_path):
    net = _randomise_bn(IResNet(TINY)).eval()
    state = {f"module.{k}": v.half() for k, v in net.state_dict().items()}  # as saved from DDP, in fp16
    torch.save(state, tmp_path / "b.pth")
    again = create_arcface("synthetic", tmp_path / "b.pth", config=TINY)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(again(x), ArcFace(net.half().float())(x), atol=1e-6, rtol=0)


def test_iresnet50_pth_round_trip(tmp_path):
    """A random iresnet50 saved as arcface_torch does (torch.save(state_dict)) loads via the factory."""
    torch.manual_seed(0)
    net = _randomise_bn(IResNet(IRESNET50)).eval()
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    arc = create_arcface("pretrained", tmp_path / "backbone.pth")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(arc(x), torch.nn.functional.normalize(net(x), dim=-1), rtol=0, atol=0)


def test_wrong_state_dict_is_a_clear_error(arc, tmp_path):
    torch.save(arc.backbone.state_dict(), tmp_path / "small.pth")
    with pytest.raises(ValueError, match="IResNet"):
        create_arcface("pretrained", tmp_path / "small.pth")


def test_missing_weights_fail_fast(tmp_path, network_attempts):
    with pytest.raises(FileNotFoundError, match="iresnet50") as e:
        create_arcface("pretrained", tmp_path / "backbone.pth")
    assert "backbone.pth" in str(e.value)
    with pytest.raises(FileNotFoundError, match="w600k_r50.onnx"):
        InsightFaceIdentityMetric(tmp_path / "absent.onnx")
    assert network_attempts == []


# ------------------------------------------------------------------------------------- margin head
def test_arc_margin_logits():
    torch.manual_seed(0)
    head = ArcMarginProduct(512, 10, s=64.0, m=0.5)
    emb = torch.randn(4, 512, requires_grad=True)
    labels = torch.tensor([0, 3, 9, 3])
    logits = head(emb, labels)
    assert logits.shape == (4, 10)
    normalize = torch.nn.functional.normalize
    cos = normalize(emb.detach(), dim=-1) @ normalize(head.weight.detach(), dim=-1).T
    for i, y in enumerate(labels.tolist()):
        theta = math.acos(float(cos[i, y]))
        assert abs(float(logits[i, y].detach()) - 64 * math.cos(theta + 0.5)) < 1e-3
        others = [j for j in range(10) if j != y]
        torch.testing.assert_close(logits[i, others].detach(), 64 * cos[i, others])
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert emb.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


def test_arc_margin_bad_labels():
    head = ArcMarginProduct(512, 10)
    with pytest.raises(ValueError, match="labels"):
        head(torch.randn(2, 512), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="labels"):
        head(torch.randn(2, 512), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="embeddings"):
        head(torch.randn(2, 128), torch.tensor([0, 1]))


# ------------------------------------------------------------------------------------- ONNX metric
@pytest.fixture(scope="module")
def onnx_pair(arc, tmp_path_factory):
    path = export_onnx(arc.backbone, tmp_path_factory.mktemp("onnx") / "recog.onnx")
    return arc, InsightFaceIdentityMetric(path)


def test_onnx_is_routed_to_a_recognition_model(onnx_pair):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    _, metric = onnx_pair
    assert isinstance(metric.model, ArcFaceONNX) and metric.model.taskname == "recognition"
    assert metric.input_size == 112 and metric.model.input_mean == 127.5 and metric.model.input_std == 127.5


def test_onnx_tensor_embeddings_match_torch(onnx_pair):
    arc, metric = onnx_pair
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    e = metric.embed(x)
    assert e.shape == (3, 512) and not e.requires_grad
    torch.testing.assert_close(e, arc(x).detach(), atol=1e-4, rtol=0)


def test_onnx_uint8_embeddings_match_torch(onnx_pair):
    arc, metric = onnx_pair
    g = torch.Generator().manual_seed(1)
    u = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8, generator=g)
    ref = arc(u.permute(0, 3, 1, 2).float() / 127.5 - 1).detach()
    torch.testing.assert_close(metric.embed(u.numpy()), ref, atol=1e-4, rtol=0)
    bgr = np.ascontiguousarray(u.numpy()[..., ::-1])
    torch.testing.assert_close(metric.embed(list(bgr), channel_order="bgr"), ref, atol=1e-4, rtol=0)


def test_onnx_metric_bad_inputs(onnx_pair):
    _, metric = onnx_pair
    with pytest.raises(ValueError, match="images"):
        metric.embed(np.zeros((1, 112, 112, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="channel_order"):
        metric.embed(torch.zeros(1, 3, 112, 112), channel_order="rgba")


def test_non_recognition_onnx_is_rejected(tmp_path):
    net = IResNet(IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), input_size=96))
    path = export_onnx(net, tmp_path / "attr.onnx")  # 96x96 input: insightface routes it to Attribute
    with pytest.raises(ValueError, match="onnx_path"):
        InsightFaceIdentityMetric(path)
