"""Pipeline adapter: the pruned student trained without distillation, with the distill stage's budget."""

from edgekd._train_config import TrainingFields
from edgekd.ablation.config import AblationConfig, artifact_name
from edgekd.ablation.core import distill_stage_manifest, loss_weights, train_variants, variant_configs
from edgekd.distill.config import DistillConfig
from edgekd.evaluate import evaluate
from edgekd.models import save_classifier
from edgekd.stage_context import StageContext


def run(cfg: AblationConfig, ctx: StageContext) -> None:
    if ctx.task.name == "causal-lm":
        from edgekd.ablation.lm_stage import run_causal_lm

        return run_causal_lm(cfg, ctx)
    manifest = distill_stage_manifest(ctx.history)
    distill_cfg = DistillConfig.model_validate(manifest["config"])
    variants = variant_configs(distill_cfg, cfg)
    splits, n = ctx.splits, len(ctx.splits.label_names)
    distilled = manifest.get("metrics", {})
    ctx.metrics.update(budget={k: getattr(distill_cfg, k) for k in TrainingFields.model_fields},
                       budget_from=manifest.get("folder"), distilled_loss_weights=loss_weights(distill_cfg),
                       distilled_validation_accuracy=distilled.get("validation", {}).get("accuracy"),
                       distilled_epochs_run=distilled.get("epochs_run"), variants={})
    for trained in train_variants(str(ctx.artifact("teacher").path), str(ctx.artifact("pruned").path), splits,
                                  variants, ctx.seed, ctx.max_length):
        r, model, tok = trained.result, trained.model, trained.tokenizer
        # Validation only: the test split is read once, by the bench, which scores these models too.
        ctx.metrics["variants"][trained.name] = {
            "loss_weights": loss_weights(trained.config), "train_seconds": round(r.seconds, 1),
            "epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "steps": r.steps, "history": r.history,
            "validation": evaluate(model, tok, splits.validation, n, ctx.max_length)}
        folder = f"{trained.name}/model"
        save_classifier(model, tok, ctx.add_output(
            artifact_name(trained.name), "hf-model", folder, role="ablation", source="pruned", precision="fp32",
            runtime="pytorch", tokenizer=folder, pad_id=tok.pad_token_id, task="text-classification",
            variant=trained.name), layout=getattr(model.config, "edgekd_layout", None))
