"""Train an LDV domain adapter for Qwen2-Audio with the HF Trainer.

    python train_hf.py                                              # the embedded demo (configuration/recipes/demo.yaml)
    python train_hf.py configuration/recipes/qwen2_audio_7b.yaml    # the real model on your data
    python train_hf.py configuration/recipes/demo.yaml --max_steps 50 --output_dir outputs/quick   # overrides

Every field of the argument dataclasses (``modeling_qwen2audio_ldv/training/arguments.py``) and of
``transformers.TrainingArguments`` is a flag and a recipe key. Runs under ``torchrun``/``accelerate launch``
unchanged (only rank 0 writes). The steps below are the package's ``training/`` modules, in order.
"""

import logging
import os
import sys
import time
from pathlib import Path

from transformers import set_seed

from modeling_qwen2audio_ldv.training import arguments
from modeling_qwen2audio_ldv.training.data import load_training_data
from modeling_qwen2audio_ldv.training.pipeline import (
    evaluate_run,
    load_model_for_training,
    load_saved_adapter,
    training_collator,
    write_run_outputs,
)
from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

logger = logging.getLogger("train_hf")
REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_RECIPE = REPO_ROOT / "configuration" / "recipes" / "demo.yaml"


def parse_arguments(argv: list[str]):
    """``[recipe.yaml] [--key value ...]``: the recipe's keys (default: the demo's) first, command-line flags
    override them. Returns ``((model_args, adapter_args, data_args, objective_args, training_args), recipe)``."""
    return arguments.parse_arguments(argv, DEFAULT_RECIPE)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and write the results; returns ``results.json``'s record (``{}`` on processes but rank 0)."""
    # 1. Arguments, logging, seed.
    (model_args, adapter_args, data_args, objective_args, training_args), recipe = parse_arguments(
        sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if recipe:
        logger.info("recipe: %s", recipe)
    set_seed(training_args.seed)

    # 2. Base model + a fresh adapter; only the adapter trains.
    model, processor, load_kwargs = load_model_for_training(model_args, adapter_args, training_args.device, REPO_ROOT)

    # 3. Data: the demo corpus or the user's recordings, bad rows handled by policy.
    data = load_training_data(data_args, training_args.seed, objective_args.objective)

    # 4. Collation: from the feature cache (the frozen tower runs once per clip) or from audio.
    data.train, collator = training_collator(model, processor, data.train, data_args, objective_args.objective,
                                             training_args)
    training_args.remove_unused_columns = False

    # 5. Train (adapter-only checkpoints; resume with a strict key check). With --push_to_hub the adapter is
    #    published once, after evaluation, with its results in the model card (not every checkpoint folder).
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = DomainAdapterTrainer(
        model=model, args=training_args, train_dataset=data.train, data_collator=collator,
        objective=objective_args.objective, distill_weight=objective_args.distill_weight,
        distill_warmup_steps=objective_args.distill_warmup_steps,
        distill_loss=objective_args.distill_loss, scale_learning_rate=objective_args.scale_learning_rate,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start
    adapter_dir = os.path.join(training_args.output_dir, "adapter")
    trainer.save_model(adapter_dir)
    if not trainer.is_world_process_zero():
        return {}

    # 6. Evaluate: reload the saved adapter exactly as a user would, baseline vs adapted on each eval set.
    model = load_saved_adapter(adapter_dir, load_kwargs, training_args.device)
    results = evaluate_run(model, processor, data, model_args, adapter_args, data_args, objective_args, train_seconds)

    # 7. Write the results and pictures; publish the adapter with them (--push_to_hub).
    output_dir = training_args.output_dir
    json_path, md_path = write_run_outputs(results, output_dir, trainer.state.log_history, model, processor, data,
                                           data_args)
    if push_to_hub:
        from modeling_qwen2audio_ldv.tools.hub import push_adapter

        push_adapter(adapter_dir, training_args.hub_model_id or Path(output_dir).name, results,
                     token=training_args.hub_token, private=training_args.hub_private_repo,
                     revision=training_args.hub_revision)
    logger.info("results: %s and %s", json_path, md_path)
    print(f"\nResults written to {os.path.abspath(md_path)} (and results.json, PNGs) in {os.path.abspath(output_dir)}")
    return results


if __name__ == "__main__":
    main()
