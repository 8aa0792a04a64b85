"""Fine-tuning the text encoder: it learns from interactions, checkpoints, resumes and reloads.

These run the real MiniLM (from its package, offline) for a few steps on tiny data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("peft")

from tests.models.test_models import CF, ModelContract
from tests.synthetic import Synthetic, make_clustered
from warmstart.finetune import FineTuneConfig, TextTower, finetune, load_tower
from warmstart.finetune import trainer as trainer_module
from warmstart.finetune.batching import length_batches
from warmstart.finetune.tower import length_groups
from warmstart.models import Recommender
from warmstart.text import MiniLMEncoder

pytestmark = pytest.mark.usefixtures("_environment")  # tests/conftest.py


def _gap(emb: np.ndarray, cluster: np.ndarray) -> float:
    """Mean cosine of items in the same cluster minus that of items in different clusters."""
    sim = emb @ emb.T
    same = cluster[:, None] == cluster[None, :]
    off = ~np.eye(len(cluster), dtype=bool)
    return float(sim[same & off].mean() - sim[~same].mean())


FAST = {"batch_size": 20, "validation_fraction": 0.0, "learning_rate": 2e-3, "seed": 0}


def test_untrained_tower_is_the_packaged_minilm() -> None:
    texts = ["a quiet film about the sea", "graph neural networks for molecules"]
    tower = TextTower(FineTuneConfig(max_length=256))
    ours = tower.encode(texts)
    reference = MiniLMEncoder().encode(texts)
    assert np.allclose(np.sum(ours * reference, axis=1), 1.0, atol=1e-4)


def test_training_lowers_the_loss_and_pulls_co_picked_items_together() -> None:
    ds, cluster = make_clustered()
    before = _gap(TextTower(FineTuneConfig()).encode(ds.item_texts()), cluster)
    # Texts say nothing here, so the adapters must learn the clusters from who picked what:
    # telling 40 items apart from three random words each takes adapters on every layer.
    cfg = FineTuneConfig(
        layers=None,
        epochs=25,
        batch_size=8,
        learning_rate=3e-3,
        temperature=0.1,
        lora_dropout=0.0,
        warmup_fraction=0.0,
        validation_fraction=0.0,
    )
    result = finetune(ds, cfg, progress=False)
    after = _gap(result.tower.encode(ds.item_texts()), cluster)
    losses = [h["loss"] for h in result.history[1:]]
    assert losses[-1] < losses[0], losses
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("method", ["top", "full"])
def test_other_methods_train_only_their_part(method: str) -> None:
    ds, _ = make_clustered()
    cfg = FineTuneConfig(method=method, layers=1, max_steps=2, **FAST)
    tower = TextTower(cfg)
    total = sum(p.numel() for p in tower.model.parameters())
    trainable = sum(p.numel() for p in tower.trainable_parameters())
    assert (trainable == total) is (method == "full")
    before = tower.trainable_state()
    result = finetune(ds, cfg, progress=False)
    after = result.tower.trainable_state()
    assert set(after) == set(before)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_cached_lower_layers_give_the_same_embeddings_as_the_whole_tower() -> None:
    ds, _ = make_clustered()
    texts = [*ds.item_texts()[:6], "", "a much longer text " * 30]
    cfg = FineTuneConfig(layers=2, max_length=32, max_steps=3, **FAST)
    tower = finetune(ds, cfg, progress=False).tower  # adapters no longer zero
    assert tower.frozen_layers == 4
    states = tower.lower_states(texts)
    assert states.lengths.max() == 32 and states.blank.tolist() == [False] * 6 + [True, False]
    assert np.allclose(tower.encode_states(states), tower.encode(texts), atol=1e-5)
    tower.model.eval()
    # 14 short rows and 2 long ones, shuffled: run in two length groups, returned in order
    idx = np.array([7, 0, 3, 1, 2, 4, 5, 0, 1, 2, 3, 7, 4, 5, 1, 2])
    assert len(length_groups(np.sort(states.lengths[idx]))) == 2
    direct = tower.embed([texts[i] for i in idx]).detach().numpy()
    assert np.allclose(tower.embed_states(states, idx).detach().numpy(), direct, atol=1e-5)


def test_layers_beyond_the_encoder_are_refused() -> None:
    with pytest.raises(ValueError, match="has 6 layers"):
        TextTower(FineTuneConfig(layers=7))


def test_batches_cover_every_item_once_and_group_similar_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 128, size=1000)
    order = rng.permutation(1000)
    batches = length_batches(order, lengths, 10, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) == 10 for b in batches)
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.1 * np.ptp(lengths), spread  # random batches of 10 would spread ~80 %


@pytest.mark.parametrize("objective", ["alignment", "rating", "click"])
def test_other_objectives_train(objective: str) -> None:
    ds, _ = make_clustered()
    cfg = FineTuneConfig(objective=objective, epochs=2, **FAST)
    result = finetune(ds, cfg, progress=False)
    losses = [h["loss"] for h in result.history[1:]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_hard_negatives_are_near_misses_of_the_cf_model() -> None:
    ds, cluster = make_clustered()
    cfg = FineTuneConfig(hard_negatives=True, hard_negative_pool=3, **FAST)
    prepared = trainer_module._prepare(ds, cfg)
    objective = trainer_module._Contrastive(prepared, cfg)
    users = np.arange(prepared.train.shape[0])
    negatives = objective.hard_negatives(users, np.random.default_rng(0))
    picked = [set(prepared.train[u].indices) for u in users]
    assert all(int(j) not in picked[u] for u, j in zip(users, negatives, strict=True))
    # each user picked 6 of their cluster's 10 items: the near misses are mostly the other 4
    # (a random unpicked item is of the user's cluster 4 times in 34)
    own = [cluster[next(iter(picked[u]))] for u in users]
    assert np.mean(cluster[negatives] == own) > 0.75
    result = finetune(ds, FineTuneConfig(hard_negatives=True, epochs=2, **FAST), progress=False)
    losses = [h["loss"] for h in result.history[1:]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_hard_negatives_only_with_the_contrastive_objective() -> None:
    with pytest.raises(ValueError, match="contrastive objective"):
        FineTuneConfig(objective="alignment", hard_negatives=True)


def test_domain_adaptation_learns_the_catalogue_words_and_keeps_frozen_layers() -> None:
    from warmstart.finetune.domain import adapt_to_domain

    ds, _ = make_clustered()
    cfg = FineTuneConfig(mlm_epochs=4, batch_size=8, learning_rate=3e-3, seed=0)
    tower = TextTower(cfg)
    frozen = {k: v.detach().clone() for k, v in tower.bert.encoder.layer[0].state_dict().items()}
    losses = adapt_to_domain(tower, ds.item_texts(), progress=False, say=lambda _: None)
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    after = tower.bert.encoder.layer[0].state_dict()
    assert all(np.array_equal(frozen[k].numpy(), after[k].numpy()) for k in frozen)
    # and as the first stage of fine-tuning, recorded with the result
    result = finetune(ds, FineTuneConfig(mlm_epochs=1, max_steps=2, **FAST), progress=False)
    assert len(result.mlm_losses) == 1 and np.isfinite(result.mlm_losses[0])


def test_click_reports_auc_and_rating_reports_rmse_on_held_out_items() -> None:
    ds, _ = make_clustered()
    settings = {**FAST, "validation_fraction": 0.2, "epochs": 3, "patience": 3}
    click = finetune(ds, FineTuneConfig(objective="click", **settings), progress=False)
    # Held-out texts carry no hint of their cluster here, so AUC is only checked to be one.
    aucs = [h["auc"] for h in click.history]
    assert len(aucs) == 4 and all(0.0 <= a <= 1.0 for a in aucs), aucs
    rating = finetune(ds, FineTuneConfig(objective="rating", **settings), progress=False)
    rmses = [h["rmse"] for h in rating.history]  # every rating is 1: the head learns the level
    assert np.isfinite(rmses).all() and rmses[-1] < rmses[0], rmses


def test_validation_keeps_the_best_epoch_and_writes_outputs(tmp_path: Path) -> None:
    ds, _ = make_clustered()
    cfg = FineTuneConfig(epochs=2, **{**FAST, "validation_fraction": 0.2})
    result = finetune(ds, cfg, output=tmp_path / "ft", progress=False)
    recalls = [h["recall"] for h in result.history]
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert result.best_recall == max(recalls)
    assert result.history[result.best_epoch]["recall"] == result.best_recall
    meta = json.loads((tmp_path / "ft" / "encoder.json").read_text())
    assert meta["best_epoch"] == result.best_epoch
    assert (tmp_path / "ft" / "learning_curves.png").stat().st_size > 0
    again = load_tower(tmp_path / "ft")
    texts = ds.item_texts()[:5]
    assert np.allclose(again.encode(texts), result.tower.encode(texts), atol=1e-6)
    assert (tmp_path / "ft" / "merged" / "model.safetensors").is_file()


def test_merged_encoder_loads_in_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ds, _ = make_clustered()
    cfg = FineTuneConfig(max_steps=3, **FAST)  # no validation: the last step's weights are kept
    tower = finetune(ds, cfg, progress=False).tower
    texts = ds.item_texts()[:5]
    tuned = tower.encode(texts)
    assert not np.allclose(tuned, TextTower(cfg).encode(texts), atol=1e-4)  # it did train
    merged = SentenceTransformer(str(tower.save_merged(tmp_path / "merged")), device="cpu")
    assert merged.max_seq_length == cfg.max_length
    assert np.allclose(merged.encode(texts), tuned, atol=1e-5)


def test_interrupted_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, _ = make_clustered()
    cfg = FineTuneConfig(epochs=2, **FAST)
    whole = finetune(ds, cfg, progress=False).tower.trainable_state()

    def stop_after_epoch_one(message: str) -> None:
        if message.startswith("epoch 1:"):
            raise KeyboardInterrupt

    out = tmp_path / "ft"
    with pytest.raises(KeyboardInterrupt):
        finetune(ds, cfg, output=out, progress=False, say=stop_after_epoch_one)
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["epoch"] == 1

    # A crash while writing the next checkpoint leaves the last good one in place.
    real = trainer_module.write_json

    def failing(path: Path, obj: object) -> None:
        if Path(path).name == "trainer.json":
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(trainer_module, "write_json", failing)
    with pytest.raises(OSError):
        finetune(ds, cfg, output=out, resume=True, progress=False)
    monkeypatch.setattr(trainer_module, "write_json", real)
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint.")]

    resumed = finetune(ds, cfg, output=out, resume=True, progress=False).tower.trainable_state()
    assert set(resumed) == set(whole)
    for name, value in whole.items():
        assert np.allclose(resumed[name], value, atol=1e-6), name


def test_resume_needs_a_checkpoint_and_the_same_settings(tmp_path: Path) -> None:
    ds, _ = make_clustered()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        finetune(ds, FineTuneConfig(**FAST), output=tmp_path / "none", resume=True)
    finetune(ds, FineTuneConfig(epochs=1, **FAST), output=tmp_path / "ft", progress=False)
    with pytest.raises(ValueError, match="other fine-tuning settings"):
        finetune(
            ds, FineTuneConfig(epochs=1, **{**FAST, "seed": 1}), output=tmp_path / "ft", resume=True
        )


class TestWarmStartFTContract(ModelContract):
    model_name = "warmstart-ft"
    params: ClassVar[dict[str, Any]] = {
        "cf": CF,
        "finetune": {"max_steps": 3, "batch_size": 16, "validation_fraction": 0.0},
    }
    folds_in = True
    text_aware = True
    serves_cold_items = True
    serves_cold_users = True


def test_warmstart_ft_saves_and_loads_offline(
    data: Synthetic,
    tmp_path: Path,
) -> None:
    from warmstart.finetune.recommender import WarmStartFTRecommender

    params = {"finetune": {"max_steps": 3, "batch_size": 16, "validation_fraction": 0.0}}
    m = WarmStartFTRecommender(cache_dir=str(tmp_path / "cache"), **params).fit(data.dataset)
    assert m.tower is not None and m.finetune_history_
    assert m.encoder.name.startswith("all-MiniLM-L6-v2+ft-lora-")
    users = sorted(data.warm_users)[:5]
    r = m.recommend(users, k=5)
    loaded = Recommender.load(m.save(tmp_path / "model"))
    assert isinstance(loaded, WarmStartFTRecommender)
    assert loaded.encoder.name == m.encoder.name
    assert np.array_equal(loaded.recommend(users, k=5).scores, r.scores)
    texts = data.dataset.item_texts()[:3]
    assert np.allclose(loaded.encode(texts), m.encode(texts), atol=1e-6)


def test_warmstart_ft_aligns_to_cf_unless_an_objective_is_named() -> None:
    from warmstart.finetune.recommender import WarmStartFTConfig

    assert WarmStartFTConfig().finetune.objective == "alignment"
    tuned = WarmStartFTConfig.model_validate({"finetune": {"epochs": 2}})
    assert (tuned.finetune.objective, tuned.finetune.epochs) == ("alignment", 2)
    named = WarmStartFTConfig.model_validate({"finetune": {"objective": "contrastive"}})
    assert named.finetune.objective == "contrastive"
    assert WarmStartFTConfig.model_validate(named.model_dump()) == named  # round-trips


def test_default_learning_rate_depends_on_method_and_objective() -> None:
    assert FineTuneConfig().lr == 2e-4  # contrastive LoRA: in-batch negatives overfit at 5e-4
    assert FineTuneConfig(objective="alignment").lr == 5e-4
    assert FineTuneConfig(method="top").lr == 5e-5
    assert FineTuneConfig(learning_rate=1e-3).lr == 1e-3
