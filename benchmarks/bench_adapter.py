"""Adapter overhead at Qwen2-Audio's real audio shapes (random weights).

    python benchmarks/bench_adapter.py [--threads 2] [--skip-tower]

Measures, in one process:
1. the `standard` adapter on a 7.5 s clip (187 valid of 750 encoder frames) computed over the valid frames only
   (what the model does) vs. over all 750 frames (an adapter that ignores padding lengths);
2. the adapter's time as a share of the audio tower's (d_model 1280, 32 layers) on the same clip, for the stock
   padded 30 s tower pass and for the trimmed tower pass.
Targets: trimmed adapter >= 3x faster than over 750 frames; adapter < 3% of the tower.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds  # noqa: E402

from modeling_qwen2audio_ldv import DomainAdapterConfig, TransformerDomainAdapter  # noqa: E402
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio  # noqa: E402

FRAMES, VALID, D = 750, 187, 1280


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-tower", action="store_true", help="skip the 32-layer tower timing (minutes on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    adapter = TransformerDomainAdapter(DomainAdapterConfig.preset("standard", zero_init=False), D).eval()
    features = torch.randn(1, FRAMES, D)
    valid_mask = torch.arange(FRAMES)[None] < VALID
    full_mask = torch.ones(1, FRAMES, dtype=torch.bool)
    with torch.inference_mode():
        trimmed = median_seconds(lambda: adapter(features, valid_mask), args.repeats)
        untrimmed = median_seconds(lambda: adapter(features, full_mask), args.repeats)
    print(f"standard adapter ({sum(p.numel() for p in adapter.parameters()):,} params), 7.5 s clip, {args.threads} threads")
    print(f"  over {VALID} valid frames : {trimmed * 1e3:8.2f} ms")
    print(f"  over all {FRAMES} frames   : {untrimmed * 1e3:8.2f} ms")
    print(f"  speed-up from trimming  : {untrimmed / trimmed:8.2f}x  (target >= 3x)")
    if args.skip_tower:
        return

    config = Qwen2AudioEncoderConfig()  # the real encoder's shapes: d_model 1280, 32 layers, 20 heads, 128 mels
    tower = Qwen2AudioEncoder(config).eval()
    mel = torch.randn(1, config.num_mel_bins, 3000)
    mel_mask = (torch.arange(3000)[None] < 750).long()  # 7.5 s = 750 mel frames -> 187 encoder frames
    with torch.inference_mode():
        padded_tower = median_seconds(lambda: encode_audio(tower, mel, mel_mask, trim=False), repeats=1, warmup=0)
        trimmed_tower = median_seconds(lambda: encode_audio(tower, mel, mel_mask, trim=True), repeats=3)
    print(f"audio tower (32 layers, d_model 1280) on the same clip")
    print(f"  stock padded 30 s pass  : {padded_tower:8.2f} s   adapter share {100 * trimmed / padded_tower:6.2f}%")
    print(f"  trimmed pass            : {trimmed_tower:8.2f} s   adapter share {100 * trimmed / trimmed_tower:6.2f}%"
          "  (target < 3%)")


if __name__ == "__main__":
    main()
