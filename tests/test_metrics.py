"""Evaluation metrics (cff_lib.metrics) against known values, and their input checks."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

import cff_lib  # noqa: F401
from cff_lib import metrics as M
from cff_lib.emotions import EMOTIONS, VALENCE_AROUSAL
from cff_lib.vgg_perceptual import create_vgg


def images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return create_vgg("synthetic")


# ---------------------------------------------------------------------------------------------- SSIM, LPIPS
def test_ssim_identical_is_one_and_different_is_less():
    a, b = images(seed=1), images(seed=2)
    r = M.ssim(a, a)
    assert r.name == "ssim" and r.n == 3 and r.higher_is_better
    assert np.allclose(r.per_item, 1.0, atol=1e-5) and r.mean == pytest.approx(1.0, abs=1e-5)
    assert M.ssim(a, b).mean < 0.5


def test_ssim_is_on_unit_range_images():
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    a, b = images(seed=3), (images(seed=3) * 0.7 + 0.1).clamp(-1, 1)
    got = M.ssim(a, b).per_item
    unit = tm_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, reduction="none")
    assert np.allclose(got, unit.numpy(), atol=1e-6)
    bytes_ = tm_ssim((a + 1) * 127.5, (b + 1) * 127.5, data_range=255.0, reduction="none")
    assert np.allclose(got, bytes_.numpy(), atol=1e-5)  # scale-invariant
    shifted = tm_ssim(a, b, data_range=2.0, reduction="none")
    assert not np.allclose(got, shifted.numpy(), atol=1e-3)  # but not shift-invariant


def test_lpips_synthetic_identical_zero_different_positive(vgg):
    lp = M.Lpips("synthetic", vgg=vgg)
    a, b = images(2, 64, seed=4), images(2, 64, seed=5)
    same = lp(a, a)
    assert same.name == "LPIPS-VGG(synthetic)" and not same.higher_is_better
    assert np.allclose(same.per_item, 0.0, atol=1e-10)
    diff = lp(a, b)
    assert all(v > 0 for v in diff.per_item)
    assert lp(a, b).per_item == pytest.approx(lp(b, a).per_item)  # symmetric


def test_lpips_synthetic_matches_the_formula_by_hand(vgg):
    a, b = images(2, 64, seed=6), images(2, 64, seed=7)
    fa, fb = vgg(a), vgg(b)
    want = 0.0
    for name in ("conv3_3", "conv4_3"):
        xa = fa[name].double() / (fa[name].double().norm(dim=1, keepdim=True) + 1e-10)
        xb = fb[name].double() / (fb[name].double().norm(dim=1, keepdim=True) + 1e-10)
        want = want + ((xa - xb) ** 2).sum(1).mean((1, 2))
    assert M.Lpips("synthetic", vgg=vgg)(a, b).per_item == pytest.approx(want.tolist(), rel=1e-9)


def test_lpips_paper_fails_fast_without_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        M.Lpips("paper", net="alex", backbone_checkpoint=tmp_path / "missing.pth")


def test_lpips_paper_loads_a_local_torchvision_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in feats.items()}, path)
    lp = M.Lpips("paper", net="alex", backbone_checkpoint=path)
    assert torch.equal(lp.model.net.slice1[0].weight, feats["0.weight"])
    a, b = images(2, 64, seed=8), images(2, 64, seed=9)
    assert lp(a, a).per_item == pytest.approx([0.0, 0.0], abs=1e-6)
    assert min(lp(a, b).per_item) > 0 and lp.name == "LPIPS-alex"


def test_lpips_bad_backend_and_missing_vgg():
    with pytest.raises(ValueError, match="backend"):
        M.Lpips("pretrained")
    with pytest.raises(ValueError, match="vgg"):
        M.Lpips("synthetic")
    with pytest.raises(ValueError, match="vgg is in training mode"):
        M.Lpips("synthetic", vgg=create_vgg("synthetic").train())


# ------------------------------------------------------------------------------------------------- Fréchet
def _closed_form(mu1, s1, mu2, s2):
    r1 = linalg.sqrtm(s1).real
    cross = linalg.sqrtm(r1 @ s2 @ r1).real  # symmetric form: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def test_frechet_distance_of_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a1 @ a1.T / d + np.eye(d), a2 @ a2.T / d + 0.5 * np.eye(d)
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    truth = _closed_form(mu1, s1, mu2, s2)
    got = M.frechet_distance(x, y)
    assert got == pytest.approx(truth, abs=0.1)
    # exactly the closed form of the sample moments
    exact = _closed_form(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert got == pytest.approx(exact, rel=1e-9)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_bad_inputs():
    with pytest.raises(ValueError, match="feats_b"):
        M.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="feats_a"):
        M.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="feats_a"):
        M.frechet_distance(np.zeros((0, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="feats_b"):
        M.frechet_distance(np.zeros((5, 3)), np.full((5, 3), np.nan))


def test_fid_synthetic_names_its_extractor():
    def extractor(x):
        return x.mean(dim=(2, 3))  # (B, 3): channel means

    fid = M.Fid("synthetic", extractor=extractor, extractor_name="channel-means")
    real, fake = images(6, 16, seed=1), images(5, 16, seed=2) * 0.5
    r = fid(real, fake)
    assert r.name == "FID[channel-means]" and r.extractor == "channel-means" and r.feature_dim == 3
    assert (r.n_real, r.n_fake) == (6, 5)
    want = M.frechet_distance(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert r.value == pytest.approx(want)
    with pytest.raises(ValueError, match="extractor_name"):
        M.Fid("synthetic", extractor=extractor)
    with pytest.raises(ValueError, match="fake"):
        fid(real, fake[:1])


def test_fid_paper_fails_fast_without_inception(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05"):
        M.Fid("paper", weights_path=tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------ identity, CLIP
class FakeClip:
    """encode_image: the image's first pixel of each channel, padded; encode_text: a fixed table."""

    table = {"face": [1.0, 0.0, 0.0, 0.0], "sad face": [1.0, 1.0, 0.0, 0.0], "old face": [0.0, 0.0, 1.0, 0.0]}

    def encode_image(self, x):
        v = x[:, :, 0, 0]  # (B, 3)
        return torch.cat([v, torch.zeros(len(x), 1)], dim=1)

    def encode_text(self, texts):
        return torch.tensor([self.table[t] for t in texts])


def solid(rgb_list, size=12):
    return torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, size, size) for c in rgb_list]).float()


def test_directional_clip_similarity_by_hand():
    clip = FakeClip()
    gen = solid([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    ref = solid([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    r = M.directional_clip_similarity(clip, gen, ref, "sad face", "face")
    # text direction: unit([1,1,0,0]) - [1,0,0,0] = [1/√2 - 1, 1/√2, 0, 0]
    dt = np.array([1 / math.sqrt(2) - 1, 1 / math.sqrt(2), 0, 0])
    for i, g in enumerate([[0.6, 0.8, 0.0, 0], [0.0, 0.0, 1.0, 0]]):
        di = np.array(g) - np.array([1.0, 0, 0, 0])
        want = di @ dt / np.linalg.norm(di) / np.linalg.norm(dt)
        assert r.per_item[i] == pytest.approx(want, abs=1e-6)
    assert r.name == "s_dir"
    zero = M.directional_clip_similarity(clip, ref, ref, "sad face", "face")
    assert zero.per_item == pytest.approx([0.0, 0.0])


def test_text_image_cosine_and_clip_score():
    clip = FakeClip()
    imgs = solid([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    cos = M.text_image_cosine(clip, imgs, ["face", "face"])
    assert cos.per_item == pytest.approx([0.6, 0.0], abs=1e-6)
    neg = solid([[-1.0, 0.0, 0.0]])
    assert M.text_image_cosine(clip, neg, "face").per_item == pytest.approx([-1.0])
    assert M.clip_score(clip, neg, "face").per_item == pytest.approx([0.0])  # max(cos, 0)
    assert M.clip_score(clip, imgs, ["face", "old face"], weight=2.5).per_item == pytest.approx([1.5, 2.5])
    with pytest.raises(ValueError, match="texts"):
        M.text_image_cosine(clip, imgs, ["face"])


def test_identity_similarity_is_arcface_cosine():
    def arc(x):
        return F.normalize(x.mean(dim=(2, 3)), dim=-1)

    a, b = solid([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), solid([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    r = M.identity_similarity(arc, a, b)
    assert r.name == "identity_similarity" and r.higher_is_better
    assert r.per_item == pytest.approx([1.0, 0.0], abs=1e-9)


# ------------------------------------------------------------------------------------------ attributes
def test_age_metrics_by_hand():
    r = M.age_metrics([20, 30, 41, 60], [25, 30, 35, 50], tolerance=5.0)
    # errors -5, 0, 6, 10 -> within 5: 2 of 4
    assert r.accuracy == 0.5 and r.accuracy_percent == 50.0
    assert r.mae == pytest.approx(21 / 4)
    assert r.rmse == pytest.approx(math.sqrt((25 + 0 + 36 + 100) / 4))
    assert M.age_metrics([20], [26]).tolerance == 5.0 and M.age_metrics([20], [26]).accuracy == 0.0


def test_emotion_accuracy_from_logits_indices_and_names():
    logits = torch.zeros(3, 8)
    logits[0, 2], logits[1, 3], logits[2, 0] = 5, 5, 5
    assert M.emotion_accuracy(logits, [2, 3, 1]).mean == pytest.approx(2 / 3)
    assert M.emotion_accuracy(["happy", "sad"], ["happy", "angry"]).per_item == (1.0, 0.0)
    with pytest.raises(ValueError, match="target"):
        M.emotion_accuracy([1, 2], [1, 9])
    with pytest.raises(ValueError, match="pred"):
        M.emotion_accuracy(torch.zeros(2, 7), [1, 2])


def test_valence_arousal_metrics_by_hand():
    target = np.array([[0.0, 0.0], [0.5, 0.5], [1.0, -0.5]])
    pred = np.array([[0.1, 0.0], [0.4, 0.9], [0.9, -0.5]])
    r = M.valence_arousal_metrics(pred, target)
    v, t = pred[:, 0], target[:, 0]
    r_v = ((v - v.mean()) @ (t - t.mean())) / math.sqrt(((v - v.mean()) ** 2).sum() * ((t - t.mean()) ** 2).sum())
    assert r.pearson_valence == pytest.approx(r_v)
    from scipy.stats import pearsonr

    assert r.pearson_arousal == pytest.approx(pearsonr(pred[:, 1], target[:, 1])[0])
    assert r.avd == pytest.approx((0.1 + math.sqrt(0.01 + 0.16) + 0.1) / 3)
    const = M.valence_arousal_metrics(np.zeros((3, 2)), target)
    assert math.isnan(const.pearson_valence)
    with pytest.raises(ValueError, match="pred_va"):
        M.valence_arousal_metrics(np.zeros((3, 3)), target)


def test_emotion_emd():
    p = np.zeros(8)
    p[EMOTIONS.index("happy")] = 1
    q = np.zeros(8)
    q[EMOTIONS.index("sad")] = 1
    assert M.emotion_emd(p, p) == pytest.approx(0.0, abs=1e-12)
    (vh, ah), (vs, as_) = VALENCE_AROUSAL["happy"], VALENCE_AROUSAL["sad"]
    assert M.emotion_emd(p, q) == pytest.approx(math.hypot(vh - vs, ah - as_))
    # half the mass moves happy -> sad; unnormalised input is normalised
    half = p * 2 + q * 2
    assert M.emotion_emd(p * 4, half) == pytest.approx(0.5 * math.hypot(vh - vs, ah - as_))
    h = M.emotion_histogram(["happy", "happy", "sad", "neutral"])
    assert h.sum() == pytest.approx(1.0) and h[EMOTIONS.index("happy")] == 0.5
    with pytest.raises(ValueError, match="q_hist"):
        M.emotion_emd(p, np.zeros(8))
    with pytest.raises(ValueError, match="p_hist"):
        M.emotion_emd(np.ones(7), q)


def test_cross_modal_consistency_by_hand():
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    e = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # not unit: normalised inside
    r = M.cross_modal_consistency({"text": t, "audio": a, "emotion": e, "age": None})
    s = 1 / math.sqrt(2)
    # sample 0: cos(t,a)=0, cos(t,e)=s, cos(a,e)=s; sample 1: all 1
    assert r.per_item == pytest.approx([(0 + s + s) / 3, 1.0])
    assert r.name == "cmc" and "age" not in r.note
    with pytest.raises(ValueError, match="normalized"):
        M.cross_modal_consistency({"text": t, "age": None})
    with pytest.raises(ValueError, match="audio"):
        M.cross_modal_consistency({"text": t, "audio": a[:1]})


# --------------------------------------------------------------------------------------------------- seeds
def test_mean_std_and_seed_results():
    assert M.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # ddof = 1
    m, s = M.mean_std([0.5])
    assert m == 0.5 and math.isnan(s)
    r = M.SeedResults(M.PAPER_EVAL_SEEDS).with_metric("ssim", [0.9, 0.91, 0.92, 0.93, 0.94])
    assert r.summary("ssim")[0] == pytest.approx(0.92) and r.format("ssim").startswith("0.920 ± 0.016")
    assert M.PAPER_EVAL_SEEDS[0] == 42 and len(M.PAPER_EVAL_SEEDS) == 5
    assert list(r.table()["metric"]) == ["ssim"]
    with pytest.raises(ValueError, match="seeds"):
        r.with_metric("lpips", [0.1, 0.2])
    with pytest.raises(ValueError, match="values_per_seed"):
        M.mean_std([])


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_image_inputs_name_the_argument():
    a = images(2, 16)
    with pytest.raises(ValueError, match="a is an empty batch"):
        M.ssim(a[:0], a[:0])
    with pytest.raises(ValueError, match="same number"):
        M.ssim(a, a[:1])
    with pytest.raises(ValueError, match="b must have the same size"):
        M.ssim(a, images(2, 24))
    with pytest.raises(ValueError, match=r"b must lie in \[-1, 1\]"):
        M.ssim(a, a * 3)
    with pytest.raises(ValueError, match="reference"):
        M.identity_similarity(lambda x: x.mean((2, 3)), a, a[:1])
    with pytest.raises(ValueError, match="pred_ages and target_ages"):
        M.age_metrics([1, 2], [1])
    with pytest.raises(ValueError, match="target_ages"):
        M.age_metrics([1.0], [float("nan")])
    with pytest.raises(ValueError, match="target_text"):
        M.directional_clip_similarity(FakeClip(), a, a, ["sad face"] * 3, "face")
