"""Qwen2-Audio-7B shapes on one CUDA GPU, random bf16 weights (no download): what a 7B user pays for the adapter.

    python benchmarks/gpu/bench_7b.py [--output benchmarks/results/gpu] [--skip-4bit] [--batch 8] [--seconds 7.5]
    python benchmarks/gpu/bench_7b.py --tiny --output outputs/gpu_tiny   # CPU, tiny shapes: keeps the script working

Not run by CI (CI runs ``--tiny``). Measures, in one process and well within 8 minutes on an 80 GB GPU:

1. ``generate`` time with the adapter (``standard``) vs. the stock model, same weights (ratio);
2. the trimmed tower vs. the stock padded pass: time and the bf16 difference on the valid frames (32 layers);
3. the feature cache: build time per clip on the GPU, its fingerprint time;
4. one optimiser step of ``lm``, ``distill`` and ``lm+distill`` (standard preset, the Trainer's ``compute_loss``):
   time and peak GPU memory, for cached features, uncached + trimmed tower and uncached + padded tower;
5. the same ``lm`` step on a 4-bit NF4 base (bitsandbytes; the random bf16 base is saved once to a temporary
   folder and loaded with ``quantization_config``), unless ``--skip-4bit``.

Writes ``bench_7b.json`` and ``bench_7b.md`` under ``--output``. Any error stops the script with a non-zero exit
status after writing what was measured (with the error), so a broken path cannot pass unnoticed.
"""

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from modeling_qwen2audio_ldv import DomainAdapterConfig, add_domain_adapter_to_model  # noqa: E402
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio  # noqa: E402
from modeling_qwen2audio_ldv.testing import build_char_tokenizer, build_processor  # noqa: E402

SEVEN_B_TEXT = dict(model_type="qwen2", vocab_size=156032, hidden_size=3584, intermediate_size=18944,
                    num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    max_position_embeddings=8192, rope_theta=10000.0, tie_word_embeddings=False)
SEVEN_B_AUDIO = dict(model_type="qwen2_audio_encoder", d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                     encoder_ffn_dim=5120, num_mel_bins=128, max_source_positions=1500)
TINY_TEXT = dict(model_type="qwen2", vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
TINY_AUDIO = dict(model_type="qwen2_audio_encoder", d_model=16, encoder_layers=2, encoder_attention_heads=4,
                  encoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500)


class Bench:
    def __init__(self, device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def time(self, fn, repeats=1):
        fn()  # warm-up
        self.sync()
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        self.sync()
        return (time.perf_counter() - start) / repeats, out

    def peak(self, fn):
        """(seconds, peak GPU memory in GB above the memory in use before) of one call after a warm-up."""
        fn()
        if self.device.type != "cuda":
            seconds, _ = self.time(fn)
            return seconds, None
        torch.cuda.empty_cache()
        self.sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start, (torch.cuda.max_memory_allocated() - base) / 2**30


def build_base(tiny: bool, device, dtype):
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tokenizer = build_char_tokenizer()
    text = dict(TINY_TEXT if tiny else SEVEN_B_TEXT)
    text["vocab_size"] = text["vocab_size"] or len(tokenizer)
    text.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    audio = TINY_AUDIO if tiny else SEVEN_B_AUDIO
    config = Qwen2AudioConfig(audio_config=audio, text_config=text,
                              audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in place on the device, in its dtype: no float32 copy of 8.4B weights
    try:
        with torch.device(device):
            model = Qwen2AudioForConditionalGeneration(config)  # the class's own random initialisation
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    processor = build_processor(tokenizer, audio["max_source_positions"], audio["num_mel_bins"])
    return model.eval(), processor


def clips(n, seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(n)]


def measure(args, results):
    cuda = torch.cuda.is_available() and not args.tiny
    if not args.tiny and not cuda:
        raise RuntimeError("no CUDA device: run with --tiny on a CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    bench = Bench(device)
    start = time.perf_counter()
    model, processor = build_base(args.tiny, device, dtype)
    results["build_s"] = time.perf_counter() - start
    results["parameters"] = sum(p.numel() for p in model.parameters())
    batch_clips = clips(args.batch, args.seconds)
    mic_clips = clips(args.batch, args.seconds, seed=1)
    texts = ["one two three four five six"] * args.batch
    from modeling_qwen2audio_ldv.data.collator import build_prompt

    prompt = build_prompt(processor)
    gen_inputs = processor(text=[prompt] * min(4, args.batch), audio=batch_clips[:4], sampling_rate=16000,
                           return_tensors="pt", padding=True).to(device)
    gen_inputs["input_features"] = gen_inputs["input_features"].to(dtype)

    def generate():
        with torch.no_grad():
            return model.generate(**gen_inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                  do_sample=False)

    results["generate_stock_s"], _ = bench.time(generate)

    quantised_dir = None
    if not args.skip_4bit:
        if not cuda:
            results["four_bit"] = "skipped: needs CUDA and bitsandbytes"
        else:
            import bitsandbytes  # noqa: F401  (fails loudly when missing; pass --skip-4bit to skip the row)

            quantised_dir = tempfile.mkdtemp(prefix="bench7b-")
            model.save_pretrained(quantised_dir)
            processor.save_pretrained(quantised_dir)

    # 2. trimmed vs padded tower (bf16 on the GPU): time and difference on the valid frames
    features = gen_inputs["input_features"][:1]
    mask = gen_inputs["feature_attention_mask"][:1]
    tower = model.model.audio_tower
    with torch.no_grad():
        t_pad, (padded, lengths) = bench.time(lambda: encode_audio(tower, features, mask, trim=False))
        t_trim, (trimmed, _) = bench.time(lambda: encode_audio(tower, features, mask, trim=True))
    n = int(lengths[0])
    results["tower_padded_s"], results["tower_trimmed_s"] = t_pad, t_trim
    results["tower_trim_max_abs_diff"] = (padded[0, :n].float() - trimmed[0, :n].float()).abs().max().item()
    results["tower_max_abs_output"] = padded[0, :n].float().abs().max().item()

    # 1. the adapter in generate (same weights, standard preset, untrained: zero_init=False to do real work)
    add_domain_adapter_to_model(model, adapter_type="standard", zero_init=False, dropout=0.0)
    model.domain_adapter.to(device)
    results["generate_adapter_s"], _ = bench.time(generate)
    with model.disable_domain_adapter():  # same class and trimmed tower, adapter bypassed: the adapter's own cost
        results["generate_adapter_disabled_s"], _ = bench.time(generate)

    # 3. the feature cache on the GPU
    import datasets

    from modeling_qwen2audio_ldv.training.feature_cache import (
        CachedFeatureCollator,
        build_feature_cache,
        feature_cache_fingerprint,
    )
    from modeling_qwen2audio_ldv.training.trainer import DomainAdapterTrainer

    rows = datasets.Dataset.from_dict({
        "audio": [{"array": c, "sampling_rate": 16000} for c in batch_clips],
        "mic_audio": [{"array": c, "sampling_rate": 16000} for c in mic_clips], "text": texts,
    }).cast_column("audio", datasets.Audio(sampling_rate=16000)).cast_column("mic_audio",
                                                                              datasets.Audio(sampling_rate=16000))
    cache_dir = tempfile.mkdtemp(prefix="bench7b-cache-")
    bench.sync()
    t0 = time.perf_counter()
    cached = build_feature_cache(model, processor, rows, audio_columns=("audio", "mic_audio"), cache_dir=cache_dir,
                                 batch_size=args.batch, progress=False)
    bench.sync()
    results["cache_build_s_per_clip"] = (time.perf_counter() - t0) / (2 * len(rows))
    results["cache_fingerprint_s"], _ = bench.time(
        lambda: feature_cache_fingerprint(model, processor.feature_extractor, rows.select_columns(["audio"]),
                                          ("audio",)))

    # 4. one optimiser step per objective and input path
    from transformers import TrainingArguments

    from modeling_qwen2audio_ldv.data.collator import DataCollatorForQwen2AudioLDV

    instruction = "Transcribe the audio."
    cached_batch = CachedFeatureCollator(processor, instruction, mic_feature_key="mic_audio_encoder",
                                         d_model=model.config.audio_config.d_model)(
        [cached.remove_columns(["audio", "mic_audio"])[i] for i in range(len(cached))])
    audio_batch = DataCollatorForQwen2AudioLDV(processor=processor, instruction=instruction, mode="train",
                                               mic_audio_key="mic_audio")(
        [{"audio": {"array": a, "sampling_rate": 16000}, "mic_audio": {"array": m, "sampling_rate": 16000},
          "text": t} for a, m, t in zip(batch_clips, mic_clips, texts)])
    audio_batch = {k: v for k, v in audio_batch.items() if torch.is_tensor(v)}

    def to_device(batch):
        return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}

    cached_batch, audio_batch = to_device(cached_batch), to_device(audio_batch)
    if args.gradient_checkpointing and cuda:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW(model.domain_adapter_parameters(), lr=1e-5)
    train_args = TrainingArguments(tempfile.mkdtemp(prefix="bench7b-out-"), report_to=[], use_cpu=not cuda,
                                   bf16=cuda)
    steps = {}
    for objective in ("lm", "distill", "lm+distill"):
        trainer = DomainAdapterTrainer(model=model, args=train_args, objective=objective)
        trainer._step_distill_frames = None
        for path in ("cached", "trimmed", "padded"):
            batch = cached_batch if path == "cached" else audio_batch
            model.config.trim_audio_tower = path != "padded"

            def step():
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = trainer.compute_loss(model, dict(batch))
                loss.backward()
                optimizer.step()
                return loss

            seconds, peak = bench.peak(step)
            steps[f"{objective}/{path}"] = {"step_s": seconds, "peak_gb": peak}
    model.config.trim_audio_tower = True
    results["steps"] = steps

    # 5. the 4-bit base
    if quantised_dir is not None:
        from transformers import BitsAndBytesConfig

        from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration

        del model, trainer, optimizer
        torch.cuda.empty_cache()
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        t0 = time.perf_counter()
        q = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
            quantised_dir, adapter_config=DomainAdapterConfig.preset("standard", zero_init=False, dropout=0.0),
            quantization_config=quant, device_map={"": 0}, dtype=torch.bfloat16)
        results["four_bit_load_s"] = time.perf_counter() - t0
        adapter_dtypes = {str(p.dtype) for p in q.domain_adapter.parameters()}
        if adapter_dtypes != {"torch.float32"}:
            raise AssertionError(f"4-bit base: adapter weights are {adapter_dtypes}, expected float32")
        results["four_bit_memory_gb"] = torch.cuda.memory_allocated() / 2**30
        q.train()
        trainer = DomainAdapterTrainer(model=q, args=train_args, objective="lm")
        optimizer = torch.optim.AdamW(q.domain_adapter_parameters(), lr=1e-5)

        def step4():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = trainer.compute_loss(q, dict(cached_batch))
            loss.backward()
            optimizer.step()

        seconds, peak = bench.peak(step4)
        results["four_bit"] = {"lm/cached": {"step_s": seconds, "peak_gb": peak}}


def write(results, output: Path):
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench_7b.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = ["# Qwen2-Audio-7B shapes" + (" (--tiny: CPU, tiny shapes)" if results["settings"]["tiny"] else ""), "",
             f"{results['settings']['device']}; batch {results['settings']['batch']} x "
             f"{results['settings']['seconds']} s clips; random weights.", "",
             "| measurement | value |", "|---|---|"]

    def row(name, value):
        lines.append(f"| {name} | {value} |")

    if "generate_adapter_s" in results:
        row("generate: adapter / stock model time (adapted class trims the tower)",
            f"{results['generate_adapter_s'] / results['generate_stock_s']:.3f} "
            f"({results['generate_adapter_s']:.3f} s vs {results['generate_stock_s']:.3f} s)")
        row("generate: adapter on / adapter bypassed (the adapter's own cost)",
            f"{results['generate_adapter_s'] / results['generate_adapter_disabled_s']:.3f}")
    if "tower_trimmed_s" in results:
        row("tower: padded / trimmed time", f"{results['tower_padded_s'] / results['tower_trimmed_s']:.1f}x")
        row("tower: max abs difference padded vs trimmed on valid frames",
            f"{results['tower_trim_max_abs_diff']:.3e} (outputs up to {results['tower_max_abs_output']:.2f})")
    if "cache_build_s_per_clip" in results:
        row("feature cache build, s per clip", f"{results['cache_build_s_per_clip']:.4f}")
        row("feature cache fingerprint, s", f"{results['cache_fingerprint_s']:.3f}")
    for name, value in results.get("steps", {}).items():
        peak = "n/a (CPU)" if value["peak_gb"] is None else f"{value['peak_gb']:.2f} GB"
        row(f"step {name}", f"{value['step_s']:.3f} s, peak {peak}")
    four = results.get("four_bit")
    if isinstance(four, dict):
        row("4-bit base: memory after load", f"{results['four_bit_memory_gb']:.2f} GB")
        for name, value in four.items():
            row(f"4-bit step {name}", f"{value['step_s']:.3f} s, peak {value['peak_gb']:.2f} GB")
    elif four:
        row("4-bit base", four)
    if "error" in results:
        row("ERROR", results["error"].splitlines()[-1])
    (output / "bench_7b.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _settings(args) -> dict:
    """The run's arguments, less where its results are written (not a setting of the measurement)."""
    return {k: v for k, v in vars(args).items() if k != "output"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (CI)")
    parser.add_argument("--skip-4bit", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=7.5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "gpu"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.seconds, args.new_tokens = min(args.batch, 2), min(args.seconds, 2.0), min(args.new_tokens, 4)
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.tiny else \
        f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    results = {"settings": {**_settings(args), "device": device, "torch": torch.__version__,
                            "transformers": transformers.__version__}}
    start = time.perf_counter()
    try:
        measure(args, results)
    except BaseException:
        results["error"] = traceback.format_exc()
        raise
    finally:
        results["wall_s"] = time.perf_counter() - start
        write(results, Path(args.output))
    return results


if __name__ == "__main__":
    main()
