"""APG and its multi-domain baseline (STAR): the layer's algebra, merging, conditions, and that a
generated layer learns a condition-dependent map a static layer cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines.star import StarLinear
from methods.model_deepening.apg import APGConfig, APGLinear, APGTower
from repro.errors import ConfigError
from repro.model import logit_of
from repro.registry import MODELS


def layer(rank: int, overparam: int = 0, generate_bias: bool = True, n: int = 12, m: int = 10, c: int = 5):
    torch.manual_seed(0)
    return APGLinear(n, m, rank, c, [7], overparam=overparam, generate_bias=generate_bias)


def explicit(lay: APGLinear, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The layer's output computed the slow way: build every row's W_i = U S_i V and b_i."""
    g = lay.hypernet(z)
    k, M = lay.rank, lay.out_dim
    if lay.overparam:
        U, V = lay.U_l @ lay.U_r, lay.V_l @ lay.V_r
    else:
        U, V = lay.U, lay.V
    out = []
    for i in range(x.shape[0]):
        W = U @ g[i, : k * k].view(k, k) @ V
        b = g[i, k * k:] if lay.generate_bias else lay.bias
        out.append(x[i] @ W + b)
    return torch.stack(out)


@pytest.mark.parametrize("overparam", [0, 9])
@pytest.mark.parametrize("generate_bias", [True, False])
def test_decomposed_forward_equals_the_explicit_per_row_weights(overparam, generate_bias):
    lay = layer(4, overparam, generate_bias)
    x, z = torch.randn(6, 12), torch.randn(6, 5)
    torch.testing.assert_close(lay(x, z), explicit(lay, x, z), rtol=1e-5, atol=1e-5)


def test_basic_apg_generates_a_full_matrix_per_row():
    lay = layer(0)
    assert lay.hypernet[-1].out_features == 12 * 10 + 10
    x, z = torch.randn(3, 12), torch.randn(3, 5)
    g = lay.hypernet(z)
    want = torch.stack([x[i] @ g[i, :120].view(12, 10) + g[i, 120:] for i in range(3)])
    torch.testing.assert_close(lay(x, z), want)


def test_rows_with_different_conditions_get_different_weights_and_equal_ones_the_same():
    lay = layer(4)
    x = torch.randn(1, 12).repeat(3, 1)
    z = torch.randn(3, 5)
    z[2] = z[0]
    y = lay(x, z)
    assert not torch.allclose(y[0], y[1])
    torch.testing.assert_close(y[0], y[2])


def test_over_parameterised_factors_merge_for_eval_and_export_without_changing_outputs():
    lay = layer(4, overparam=9)
    x, z = torch.randn(8, 12), torch.randn(8, 5)
    trained = lay(x, z)
    lay.eval()
    U1, _ = lay.factors()
    U2, _ = lay.factors()
    assert U1 is U2  # merged once per stretch of eval mode, not per forward
    torch.testing.assert_close(lay(x, z), trained)
    lay.train()
    assert lay._merged is None
    before = sum(p.numel() for p in lay.parameters())
    lay.merge_()
    assert lay.overparam == 0 and not hasattr(lay, "U_l")
    assert sum(p.numel() for p in lay.parameters()) == before - (12 * 9 + 9 * 4 + 4 * 9 + 9 * 10) + (12 * 4 + 4 * 10)
    torch.testing.assert_close(lay(x, z), trained, rtol=1e-5, atol=1e-5)


def test_parameter_count_is_the_low_rank_formula():
    n, m, k, c, h = 12, 10, 4, 5, 7
    lay = layer(k)
    hyper = (c * h + h) + (h * (k * k + m) + k * k + m)
    assert sum(p.numel() for p in lay.parameters()) == n * k + k * m + hyper


@pytest.mark.parametrize("kw, match", [
    (dict(rank=11), "rank 11 must be within"),
    (dict(rank=4, overparam=3), "overparam"),
    (dict(rank=0, overparam=9), "low-rank"),
])
def test_bad_ranks_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        APGLinear(12, 10, kw["rank"], 5, [7], overparam=kw.get("overparam", 0))


def test_tower_checks_its_config():
    with pytest.raises(ConfigError, match="one entry per hidden layer"):
        APGTower(20, APGConfig(hidden_units=[8, 4], rank=[2]), 4, 1)
    with pytest.raises(ConfigError, match="unknown condition"):
        APGTower(20, APGConfig(hidden_units=[8], rank=[2], condition="both"), 4, 1)


@pytest.mark.parametrize("condition", ["group", "self", "mix"])
def test_only_group_and_mix_conditions_read_the_condition_embedding(condition):
    torch.manual_seed(0)
    tower = APGTower(20, APGConfig(hidden_units=[8, 4], rank=[2, 2], condition=condition), 6, 1)
    x = torch.randn(5, 20)
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    ids = torch.zeros(5, 1, dtype=torch.long)
    same = torch.allclose(tower(x, a, ids), tower(x, b, ids))
    assert same == (condition == "self")


@pytest.mark.parametrize("base", ["dnn", "deepfm", "dcnv2"])
@pytest.mark.parametrize("model", ["apg", "star"])
def test_every_base_takes_the_conditioned_tower(smoke_data, base, model):
    torch.manual_seed(0)
    m = MODELS.build(model, {"base": base}, smoke_data.feature_map, embedding={"name": "full", "dim": 8})
    batch = next(smoke_data.batches("train", 256))
    assert logit_of(m(batch)).shape == (256,)
    # the condition is the scene: changing only the scene column changes the prediction
    scene = smoke_data.feature_map.categorical_index("scene")
    other = {**batch, "cat": batch["cat"].clone()}
    other["cat"][:, scene] = (other["cat"][:, scene] % 6) + 1
    m.eval()
    assert not torch.allclose(logit_of(m(batch)), logit_of(m(other)))


def test_an_unknown_condition_field_is_a_config_error(smoke_data):
    with pytest.raises(ConfigError, match="weather"):
        MODELS.build("apg", {"condition_fields": ["weather"]}, smoke_data.feature_map,
                     embedding={"name": "full", "dim": 8})
    with pytest.raises(ConfigError, match="exactly one domain field"):
        MODELS.build("star", {"condition_fields": ["scene", "device"]}, smoke_data.feature_map,
                     embedding={"name": "full", "dim": 8})


def test_star_layer_is_the_shared_layer_at_start_and_per_domain_after():
    torch.manual_seed(0)
    star = StarLinear(6, 4, domains=3)
    x, d = torch.randn(9, 6), torch.tensor([0, 1, 2] * 3)
    torch.testing.assert_close(star(x, d), x @ star.weight + star.bias)
    with torch.no_grad():
        star.domain_weight[1].mul_(2.0)
        star.domain_bias[2].add_(1.0)
    want = torch.stack([x[i] @ (star.weight * star.domain_weight[d[i]]) + star.bias + star.domain_bias[d[i]]
                        for i in range(9)])
    torch.testing.assert_close(star(x, d), want)


def fit(tower: nn.Module, x, z, ids, y, steps: int = 300) -> float:
    opt = torch.optim.Adam(tower.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(tower(x, z, ids).squeeze(-1), y)
        loss.backward()
        opt.step()
    return loss.item()


def test_group_wise_apg_learns_a_map_that_flips_with_the_condition_and_a_static_layer_cannot():
    """y = +<w, x> in group 0 and -<w, x> in group 1: no single static map fits both."""
    torch.manual_seed(0)
    n = 512
    x = torch.randn(n, 8)
    group = torch.randint(0, 2, (n,))
    y = (x @ torch.randn(8)) * (1 - 2 * group.float())
    z = nn.functional.one_hot(group, 2).float()
    apg = APGTower(8, APGConfig(hidden_units=[8], rank=[4], condition="group", hypernet_units=[16]), 2, 1)
    static = APGTower(8, APGConfig(hidden_units=[8], rank=[4], condition="group", hypernet_units=[16]), 2, 1)
    apg_loss = fit(apg, x, z, group[:, None], y)
    static_loss = fit(static, x, torch.zeros_like(z), group[:, None], y)  # same layer, condition hidden
    assert apg_loss < 0.2 * static_loss, (apg_loss, static_loss)
