import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def random_referees(image_size: int = 32, threshold: float = 0.5):
    """Randomly initialised, frozen referees (tests that need the plumbing, not trained judgements)."""
    import torch

    from cff_lib import referees as r

    torch.manual_seed(0)
    cfg = r.referee_config(image_size)
    return r.Referees(r.AttributeReferee(cfg).freeze(), r.IdentityReferee(cfg).freeze(),
                      r.TextImageReferee(cfg).freeze(), threshold, "random (tests)")
