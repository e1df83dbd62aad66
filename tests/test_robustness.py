"""L2 PGD (cff_lib.robustness): stays in its ball and in [-1, 1], raises its objective, rejects bad input."""
import pytest
import torch

from cff_lib.robustness import l2_pgd


def _linear_objective(w):
    return lambda z: (z * w).flatten(1).sum(1)  # (B,)


def test_pgd_stays_in_the_ball_and_the_image_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((4, 3, 8, 8), generator=g) * 1.6 - 0.8
    w = torch.randn((1, 3, 8, 8), generator=g)
    for random_start in (False, True):
        adv = l2_pgd(_linear_objective(w), x, radius=0.5, steps=5, random_start=random_start,
                     generator=torch.Generator().manual_seed(1))
        assert adv.shape == x.shape and not adv.requires_grad
        assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
        assert adv.min() >= -1 and adv.max() <= 1


def test_pgd_raises_the_objective_to_the_boundary_optimum():
    # for a linear objective the best point of the ball is x + r w/|w| (away from the [-1, 1] walls)
    x = torch.zeros((2, 3, 4, 4))
    w = torch.randn((1, 3, 4, 4), generator=torch.Generator().manual_seed(2))
    f = _linear_objective(w)
    adv = l2_pgd(f, x, radius=0.3, steps=4, random_start=False)
    best = 0.3 * w.norm()
    assert torch.allclose(f(adv), best.expand(2), rtol=1e-4)
    assert (f(adv) > f(x)).all()


def test_pgd_leaves_the_network_untouched_and_does_not_accumulate_grads():
    net = torch.nn.Conv2d(3, 1, 3)
    before = [p.detach().clone() for p in net.parameters()]
    l2_pgd(lambda z: net(z).flatten(1).mean(1), torch.zeros(2, 3, 6, 6), 0.2, 3)
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))


def test_pgd_bad_input_is_named():
    x = torch.zeros(2, 3, 4, 4)
    f = _linear_objective(torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="radius"):
        l2_pgd(f, x, 0.0, 3)
    with pytest.raises(ValueError, match="steps"):
        l2_pgd(f, x, 0.1, 0)
    with pytest.raises(ValueError, match="images"):
        l2_pgd(f, x[0], 0.1, 2)
    with pytest.raises(ValueError, match="one value per image"):
        l2_pgd(lambda z: z.sum(), x, 0.1, 2)
