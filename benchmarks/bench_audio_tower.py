"""Audio encoding time, trimmed (valid frames only) vs. the stock padded 30 s pass, at the real encoder's shapes.

    python benchmarks/bench_audio_tower.py [--threads 2] [--lengths 3 7.5 15 30]

Random weights with Qwen2-Audio's encoder configuration (d_model 1280, 32 layers, 20 heads, 128 mel bins,
3000 mel frames). One clip per length; both paths in this process; prints the ratio padded / trimmed and the
largest difference between the two outputs on the valid frames. Targets: >= 5x at 3 s, no slower at 30 s.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds  # noqa: E402

from modeling_qwen2audio_ldv.modeling_qwen2audio_ldv import encode_audio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=float, nargs="+", default=[3.0, 7.5, 15.0, 30.0], help="seconds")
    parser.add_argument("--layers", type=int, default=32, help="encoder layers (32 = the real encoder)")
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


if __name__ == "__main__":
    main()
