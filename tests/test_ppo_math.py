"""PPO maths against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ftlab.runner.methods import ppo_math as pm


def test_gae_matches_hand_computation() -> None:
    # one sequence of 3 tokens, γ = 0.9, λ = 0.8
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4, 0.3]])
    m = torch.ones(1, 3)
    adv, ret = pm.gae(r, v, m, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.3  # no value after the last token
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.3])


def test_gae_ignores_padding_after_the_end() -> None:
    r = torch.tensor([[1.0, 99.0]])
    v = torch.tensor([[0.25, 99.0]])
    m = torch.tensor([[1.0, 0.0]])
    adv, ret = pm.gae(r, v, m, gamma=1.0, lam=1.0)
    assert adv.tolist() == [[0.75, 0.0]] and ret.tolist() == [[1.0, 0.0]]


def test_token_rewards_put_the_score_on_the_last_real_token() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = pm.token_rewards(torch.tensor([2.0, -1.0]), kl, m, kl_coef=0.5)
    assert r.tolist()[0] == pytest.approx([-0.05, -0.1 + 2.0, 0.0])
    assert r.tolist()[1] == pytest.approx([-0.25, -0.25, -0.25 - 1.0])


def test_kl_estimators() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log_r = math.log(2.0)
    assert pm.kl_per_token(logp, ref, "k1").item() == pytest.approx(log_r)
    assert pm.kl_per_token(logp, ref, "k2").item() == pytest.approx(0.5 * log_r**2)
    assert pm.kl_per_token(logp, ref, "k3").item() == pytest.approx((0.5 - 1) + log_r)
    # k3 is unbiased for KL(p||q): average over samples of p on a 2-outcome distribution
    p, q = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = float((p * (p / q).log()).sum())
    k3 = float((p * pm.kl_per_token(p.log(), q.log(), "k3")).sum())
    assert k3 == pytest.approx(exact)


def test_clipped_policy_loss_by_hand() -> None:
    adv = torch.tensor([[1.0, -1.0]])
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(1.5), math.log(0.5)]])  # ratios 1.5 and 0.5
    out = pm.clipped_policy_loss(new, old, adv, torch.ones(1, 2), clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 ; token 1: max(0.5, 0.8) = 0.8
    assert out.loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert out.clip_fraction.item() == 1.0
    inside = pm.clipped_policy_loss(
        torch.tensor([[math.log(1.1)]]),
        torch.zeros(1, 1),
        torch.tensor([[2.0]]),
        torch.ones(1, 1),
        clip=0.2,
    )
    assert inside.loss.item() == pytest.approx(-2.2) and inside.clip_fraction.item() == 0.0


def test_clipped_value_loss_by_hand() -> None:
    loss = pm.clipped_value_loss(
        torch.tensor([[2.0]]),
        torch.tensor([[0.0]]),
        torch.tensor([[1.0]]),
        torch.ones(1, 1),
        clip=0.5,
    )
    # unclipped (2-1)^2 = 1 ; clipped V = 0.5 → (0.5-1)^2 = 0.25 ; max = 1 → ½·1
    assert loss.item() == pytest.approx(0.5)


def test_adaptive_kl_controller() -> None:
    ctl = pm.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(12.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 100 / 10_000))
    ctl = pm.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(3.0, 100) == pytest.approx(0.1 * (1 - 0.2 * 100 / 10_000))
    fixed = pm.AdaptiveKLController(0.1, target=None, horizon=10_000)
    assert fixed.update(100.0, 100) == 0.1


def test_whiten_and_entropy() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = pm.masked_whiten(x, m)
    assert pm.masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert w[0, 3].item() == 0.0
    uniform = torch.zeros(1, 4)
    assert pm.entropy_from_logits(uniform).item() == pytest.approx(math.log(4))
