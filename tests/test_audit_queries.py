"""Deterministic MoRE routing, the query / membership / block attacks, the query-robust variant and release mode."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.eval.kr import split_features
from unlearn.eval.metrics import evaluate_splits
from unlearn.eval.queries import attacker_inputs
from unlearn.methods import MoRE
from unlearn.models.split import split_for_probe

FORGET = [0]


@pytest.fixture(scope="module")
def splits(blob_data):
    return split_by_class(blob_data, FORGET)


def test_hash_routing_gives_one_answer_per_input_and_still_forgets(trained_mlp, splits):
    hashed = MoRE(num_experts=8, seed=0, routing="hash").unlearn(trained_mlp, splits)
    base, edit, _ = split_for_probe(hashed)
    values, _ = split_features(base, splits)
    z = values["D_ft"]
    first = edit(z)
    assert torch.equal(first, edit(z))  # evaluating one edit twice gives one answer
    assert torch.allclose(first[3:9], edit(z[3:9]), atol=1e-5)  # ... whatever batch the input comes in
    noisy = z * (1 + 1e-6 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0)))
    kept = torch.isclose(edit(noisy), first, atol=1e-4).all(dim=1).float().mean()
    assert kept >= 0.95  # float noise (another kernel or device) moves a feature far less than the quantum q
    assert evaluate_splits(hashed, splits)[0]["acc"] == evaluate_splits(hashed, splits)[0]["acc"]
    assert evaluate_splits(hashed, splits)[0]["acc"]["D_ft"] <= 5
    # the experts stay in use: forget samples are spread over several of them
    from unlearn.methods.more import hash_experts

    chosen = hash_experts(values["D_f"], edit.quantum, edit.hash_multipliers, edit.num_experts)
    assert len(chosen.unique()) >= 4
    random_edit = split_for_probe(MoRE(num_experts=8, seed=0).unlearn(trained_mlp, splits))[1]
    assert not torch.equal(random_edit(z), random_edit(z))  # the paper's router: a fresh draw every pass
    with pytest.raises(UnlearnError, match="routing"):
        MoRE(routing="sometimes")


def test_query_attacks_and_membership_see_more_routing_and_blocks(trained_mlp, splits):
    from unlearn.config import AuditConfig
    from unlearn.eval.queries import feature_blocks, query_audit

    settings = AuditConfig(query_copies=4, query_directions=2, query_path_steps=4)
    attacks, membership = query_audit(MoRE(num_experts=8, seed=0).unlearn(trained_mlp, splits), splits, settings)
    assert {"jitter", "finite differences", "path", "blocks", "repeated"} <= {a["threat"] for a in attacks.values()}
    assert [name for name, _ in feature_blocks(split_for_probe(trained_mlp)[0])] == ["body.0", "body.2"]
    # the random router answers one input differently each time: the spread of repeated queries gives it away
    assert membership["repeated 4x"]["AUC"] >= 95
    # a feature edit leaves the extractor as it was: its blocks still tell the forget class apart
    assert attacks["block body.2: logreg"]["D_ft"] >= 90
    hashed = MoRE(num_experts=8, seed=0, routing="hash").unlearn(trained_mlp, splits)
    hashed_membership = query_audit(hashed, splits, settings)[1]
    # one answer per input: asking again tells nothing beyond the one answer
    assert hashed_membership["repeated 4x"]["AUC"] == pytest.approx(hashed_membership["served features"]["AUC"])
    assert hashed_membership["repeated 4x"]["AUC"] < membership["repeated 4x"]["AUC"]


def test_smooth_transplant_is_deterministic_smooth_and_forgets(trained_mlp, splits):
    from unlearn.methods import SmoothTransplant

    before = evaluate_splits(trained_mlp, splits)[0]["acc"]
    unlearned = SmoothTransplant(seed=0).unlearn(trained_mlp, splits)
    after = evaluate_splits(unlearned, splits)[0]["acc"]
    assert after["D_ft"] <= 5 and after["D_rt"] >= before["D_rt"] - 1
    base, edit, _ = split_for_probe(unlearned)
    z = split_features(base, splits)[0]["D_ft"]
    assert torch.equal(edit(z), edit(z))
    # smooth: a step of 1e-4 moves the answer by about as much (a hash or a hard gate would jump)
    direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    direction = 1e-4 * direction / direction.norm(dim=1, keepdim=True)
    assert ((edit(z + direction) - edit(z)).norm(dim=1) / 1e-4).max() < 100


def test_release_gives_plain_weights_that_forget(trained_mlp, splits):
    from unlearn.methods import Release
    from unlearn.models.split import EditedHead

    method = Release(edit="MoRE-S", epochs=30, lr=0.05, batch_size=32, noise=0.5, seed=0)
    released = method.unlearn(trained_mlp, splits)
    assert not any(isinstance(m, EditedHead) for m in released.modules())  # no module left to remove
    assert type(released) is type(trained_mlp)
    after = evaluate_splits(released, splits)[0]["acc"]
    assert after["D_ft"] <= 10 and after["D_rt"] >= 90
    assert method.name == "MoRE-S+release"
    with pytest.raises(UnlearnError, match="feature edit"):
        Release(edit="NG")
    with pytest.raises(UnlearnError, match="'all'"):
        Release(on="forget")


def test_release_suppression_teaches_never_to_predict_the_class_and_remain_only_skips_forget_inputs(
    trained_mlp, splits
):
    from unlearn.methods import Release
    from unlearn.methods.release import release
    from unlearn.methods.smooth_transplant import SmoothTransplant

    # the Original as its own teacher: distilled as is, the student keeps the class; suppressed, it never says it
    kept = release(trained_mlp, trained_mlp, splits.train(), 10, 0.05, 32, seed=0)
    suppressed = release(trained_mlp, trained_mlp, splits.train(), 10, 0.05, 32, seed=0, suppress=FORGET)
    assert evaluate_splits(kept, splits)[0]["acc"]["D_ft"] >= 90
    after = evaluate_splits(suppressed, splits)[0]["acc"]
    assert after["D_ft"] == 0 and after["D_rt"] >= 90

    common = {"edit": "MoRE-S", "epochs": 3, "lr": 0.05, "batch_size": 32, "seed": 0}
    remain_only = Release(**common, on="remain").unlearn(trained_mlp, splits)
    edited = SmoothTransplant(seed=0).unlearn(trained_mlp, splits)
    direct = release(edited, trained_mlp, splits.D_r, 3, 0.05, 32, seed=0, suppress=FORGET)
    for name, value in direct.state_dict().items():
        assert torch.allclose(remain_only.state_dict()[name], value), name


def test_teacher_targets_are_the_edited_models_answers_computed_once(trained_mlp, splits):
    from unlearn.methods.release import SUPPRESSED, Targets, distil, teacher_targets
    from unlearn.methods.smooth_transplant import SmoothTransplant
    from unlearn.models.train import TrainConfig

    edited = SmoothTransplant(seed=0).unlearn(trained_mlp, splits)
    x = torch.stack([splits.D_f[i][0] for i in range(len(splits.D_f))])
    targets = teacher_targets(edited, splits.D_f, suppress=FORGET)
    base, edit, _ = split_for_probe(edited)
    with torch.no_grad():
        logits, served = edited(x), edit(base(x)).flatten(1)
    assert torch.allclose(targets.features, served, atol=1e-5)
    keep = [c for c in range(splits.num_classes) if c not in FORGET]
    assert torch.allclose(targets.logits[:, keep], logits[:, keep], atol=1e-5)
    assert (targets.logits[:, FORGET] == SUPPRESSED).all()
    short = Targets(targets.logits[:-1], targets.features[:-1])
    with pytest.raises(UnlearnError, match="teacher answers"):
        distil(trained_mlp, splits.D_f, short, TrainConfig(epochs=1, warmup_epochs=0))
    with pytest.raises(UnlearnError, match="augment"):
        distil(trained_mlp, splits.D_f, targets, TrainConfig(epochs=1, warmup_epochs=0, augment=True))


def test_distillation_loss_matches_its_formula():
    from unlearn.methods.release import distillation_loss

    generator = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 5, generator=generator), 3 * torch.randn(6, 5, generator=generator)
    z, target_z = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    tau, beta = 2.5, 0.3
    p = (target / tau).softmax(dim=1)
    kl = (p * ((target / tau).log_softmax(dim=1) - (logits / tau).log_softmax(dim=1))).sum(dim=1).mean()
    expected = tau**2 * kl + beta * ((z - target_z) ** 2).mean()
    assert torch.allclose(distillation_loss(logits, target, z, target_z, tau, beta), expected, atol=1e-6)
    assert torch.allclose(distillation_loss(logits, target, z, target_z, tau, 0.0), tau**2 * kl, atol=1e-6)


def test_noised_copy_mixes_with_a_seeded_fresh_init_and_leaves_the_model_alone(trained_mlp):
    from unlearn.methods.release import noised_copy

    before = {name: value.clone() for name, value in trained_mlp.state_dict().items()}
    fresh = noised_copy(trained_mlp, 1.0, seed=3)
    quarter = noised_copy(trained_mlp, 0.25, seed=3)
    same = noised_copy(trained_mlp, 0.0, seed=3)
    assert same is not trained_mlp
    for name, value in trained_mlp.state_dict().items():
        assert torch.equal(value, before[name]) and torch.equal(same.state_dict()[name], value)
        assert torch.allclose(quarter.state_dict()[name], 0.75 * value + 0.25 * fresh.state_dict()[name], atol=1e-6)
    assert not torch.equal(fresh.fc.weight, trained_mlp.fc.weight)
    assert torch.equal(noised_copy(trained_mlp, 1.0, seed=3).fc.weight, fresh.fc.weight)  # seeded
    assert not torch.equal(noised_copy(trained_mlp, 1.0, seed=4).fc.weight, fresh.fc.weight)


def test_release_accepts_the_edges_of_its_ranges_and_rejects_beyond(trained_mlp, splits):
    from unlearn.methods.release import release

    for noise, beta, tau in ((0.0, 0.0, 1e-3), (1.0, 0.5, 2.0)):
        release(trained_mlp, trained_mlp, splits.D_r, 1, 0.01, 64, noise, beta, tau)
    for noise, beta, tau in ((-0.1, 1.0, 2.0), (1.1, 1.0, 2.0), (0.5, -0.1, 2.0), (0.5, 1.0, 0.0)):
        with pytest.raises(UnlearnError, match="release needs"):
            release(trained_mlp, trained_mlp, splits.D_r, 1, 0.01, 64, noise, beta, tau)


def test_attacker_inputs_cap_each_training_and_test_split(splits):
    full = attacker_inputs(splits, None, 0)
    capped = attacker_inputs(splits, 7, 0, max_test=5)
    assert {name: len(capped[name][0]) for name in capped} == {"D_f": 7, "D_r": 7, "D_ft": 5, "D_rt": 5}
    assert all(len(full[name][0]) > 7 for name in full)
    x, y = capped["D_ft"]
    assert all((full["D_ft"][0] == row).all(dim=1).any() for row in x)  # drawn from the split itself
    assert torch.equal(attacker_inputs(splits, 7, 0, max_test=5)["D_r"][0], capped["D_r"][0])  # seeded
