import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def small_profile(**train):
    """The ci profile cut to a few DDIM steps at t0 20 and batch 4 (tests on tiny random models), on the paper's
    objective (L_Total through the chain, unguided) and its plain edit (no preserving edit) whatever toy and ci
    train; ``train`` replaces fields of its train section (``objective="conditional_prior"`` for toy's)."""
    import dataclasses

    from cff_lib.config import load_profile

    p = load_profile("ci")
    train = {"objective": "edit_chain", "changed_weight": 0.0, "expression_weight": 0.0, **train}
    return dataclasses.replace(
        p, ddim=dataclasses.replace(p.ddim, t0=20, n_inv_steps=2, n_gen_steps=2, guidance_scale=1.0,
                                    edit_t0=None, preserve_threshold=None),
        train=dataclasses.replace(p.train, batch_size=4, **train))


def random_referees(image_size: int = 32, threshold: float = 0.5):
    """Randomly initialised, frozen referees (tests that need the plumbing, not trained judgements)."""
    import torch

    from cff_lib import referees as r

    torch.manual_seed(0)
    cfg = r.referee_config(image_size)
    return r.Referees(r.AttributeReferee(cfg).freeze(), r.IdentityReferee(cfg).freeze(),
                      r.TextImageReferee(cfg).freeze(), threshold, "random (tests)")


import pytest  # noqa: E402


@pytest.fixture()
def network_attempts(monkeypatch):
    """Every attempt to open a network connection while the test runs, as a list of addresses (none is
    made: each attempt raises OSError). "Missing weights fail fast" means: they fail without touching
    the network; how fast is measured by bench/bench_fail_fast.py, never asserted in a test."""
    import socket

    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[1] if len(args) > 1 else args[0] if args else kwargs)
        raise OSError("network access is not allowed in tests (conftest.network_attempts)")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(self, address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(self, address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(host))
    return attempts
