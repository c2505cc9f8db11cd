"""Audio encoding time, trimmed (valid frames only) vs. the stock padded 30 s pass, at the real encoder's shapes.

    python benchmarks/bench_audio_tower.py [--threads 2] [--lengths 3 7.5 15 30]

Random weights with Qwen2-Audio's encoder configuration (d_model 1280, 32 layers, 20 heads, 128 mel bins,
3000 mel frames). One clip per length; both paths in this process; prints the ratio padded / trimmed and the
largest difference between the two outputs on the valid frames. Targets: >= 5x at 3 s, no slower at 30 s.

With the mini base present (``--base mini_base``), also: the feature-cache build time for 64 clips of 1.5 s and
one LM training step (batch 8) at the mini base's sizes, trimmed vs. padded tower.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds  # noqa: E402

from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=float, nargs="+", default=[3.0, 7.5, 15.0, 30.0], help="seconds")
    parser.add_argument("--layers", type=int, default=32, help="encoder layers (32 = the real encoder)")
    parser.add_argument("--base", default=str(Path(__file__).resolve().parents[1] / "mini_base"),
                        help="mini base for the cache-build and training-step rows ('' to skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tower = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(encoder_layers=args.layers)).eval()
    mel = torch.randn(1, tower.config.num_mel_bins, 3000)
    print(f"encoder: d_model 1280, {args.layers} layers, {args.threads} threads; one clip per row")
    print(f"{'clip s':>7} {'padded s':>9} {'trimmed s':>10} {'speed-up':>9} {'max |diff|':>11}")
    for seconds in args.lengths:
        mask = (torch.arange(3000)[None] < round(seconds * 100)).long()
        with torch.inference_mode():
            padded_out, lengths = encode_audio(tower, mel, mask, trim=False)
            trimmed_out, _ = encode_audio(tower, mel, mask, trim=True)
            padded = median_seconds(lambda: encode_audio(tower, mel, mask, trim=False), repeats=1, warmup=0)
            trimmed = median_seconds(lambda: encode_audio(tower, mel, mask, trim=True), repeats=1, warmup=0)
        valid = int(lengths[0])
        diff = (padded_out[0, :valid] - trimmed_out[0, :valid]).abs().max().item()
        print(f"{seconds:7.1f} {padded:9.3f} {trimmed:10.3f} {padded / trimmed:8.2f}x {diff:11.2e}")
    if args.base and Path(args.base).is_dir():
        mini_base_effects(args.base)


def mini_base_effects(base: str) -> None:
    import datasets
    import numpy as np
    from transformers import AutoProcessor

    from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration
    from modeling_qwen2audio_ldv.training.feature_cache import build_feature_cache

    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig.preset("standard", num_heads=4, ff_dim=512, zero_init=False))
    model.freeze_base_model()
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(24000)).astype(np.float32) for _ in range(64)]
    data = datasets.Dataset.from_dict({"audio": [{"array": c, "sampling_rate": 16000} for c in clips]})
    data = data.cast_column("audio", datasets.Audio(sampling_rate=16000))
    timings = {}
    for trim in (False, True):
        model.config.trim_audio_tower = trim
        timings[("cache", trim)] = median_seconds(
            lambda: build_feature_cache(model, processor, data, cache_dir=None, batch_size=16, progress=False),
            repeats=1, warmup=0)
        prompt = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nTranscribe.<|im_end|>\n" \
                 "<|im_start|>assistant\nthree seven<|im_end|>"
        inputs = processor(text=[prompt] * 8, audio=clips[:8], sampling_rate=16000, return_tensors="pt", padding=True)
        model.train()

        def lm_step():
            model.zero_grad()
            model(**inputs, labels=inputs["input_ids"]).loss.backward()

        timings[("step", trim)] = median_seconds(lm_step, repeats=3)
    print(f"mini base ({base}): padded vs trimmed tower")
    for what, label in (("cache", "feature cache, 64 x 1.5 s clips"), ("step", "one LM step, batch 8 (forward+backward)")):
        padded, trimmed = timings[(what, False)], timings[(what, True)]
        print(f"  {label:<42} {padded:8.3f} s {trimmed:8.3f} s {padded / trimmed:6.2f}x")


if __name__ == "__main__":
    main()
