"""A closed-form front end on the log-mel input: can per-bin statistics matching undo the LDV channel?

    python benchmarks/frontend_equalisation.py [--condition cardboard_box] [--train 300] [--eval 200] [--threads 1]

A surface's band-pass and resonances multiply the spectrum, i.e. add a per-mel-bin offset to the log-mel features;
that suggests the cheapest possible front-end adapter, fitted without gradients: statistics of the log-mel input
(valid frames only) over the demo corpus's training clips, microphone and LDV, then on the held-out LDV clips

- ``mean``: ``x + (mu_mic - mu_ldv)`` per bin;
- ``mean+var``: ``(x - mu_ldv) * sd_mic / sd_ldv + mu_mic`` per bin;
- ``utterance CMN``: the clip's own per-bin mean replaced by ``mu_mic``;
- ``utterance CMVN``: the clip's own per-bin mean and spread replaced by the microphone statistics;

and the unadapted base transcribes each. Writes ``benchmarks/results/frontend_equalisation.{json,md}``.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration  # noqa: E402
from modeling_qwen2audio_ldv.audio import SAMPLING_RATE, audio_to_array  # noqa: E402
from modeling_qwen2audio_ldv.data.collator import DEFAULT_INSTRUCTION  # noqa: E402
from modeling_qwen2audio_ldv.evaluation.scoring import compute_error_rates  # noqa: E402
from modeling_qwen2audio_ldv.inference.generate import generate_transcripts  # noqa: E402
from modeling_qwen2audio_ldv.training.arguments import DataArguments, resolve_base  # noqa: E402
from modeling_qwen2audio_ldv.training.data import build_demo_data  # noqa: E402


def log_mel(feature_extractor, clips):
    out = feature_extractor(clips, sampling_rate=SAMPLING_RATE, return_attention_mask=True, padding="max_length",
                            return_tensors="np")
    return out["input_features"], out["attention_mask"].astype(bool)


def bin_statistics(features, masks):
    """Per-bin mean and standard deviation over the valid frames of every clip."""
    frames = np.concatenate([f[:, m] for f, m in zip(features, masks)], axis=1)
    return frames.mean(1), frames.std(1)


class EqualisedProcessor:
    """``processor`` with ``transform`` applied to each clip's valid log-mel frames ``(mel bins, frames)``: the
    front end under test, in front of the package's greedy transcription (``generate_transcripts``)."""

    def __init__(self, processor, transform):
        self._processor, self._transform = processor, transform

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        inputs = self._processor(*args, **kwargs)
        features = inputs["input_features"].numpy().copy()
        masks = inputs["feature_attention_mask"].numpy().astype(bool)
        for row in range(len(features)):
            features[row][:, masks[row]] = self._transform(features[row][:, masks[row]])
        inputs["input_features"] = torch.from_numpy(features)
        return inputs


def transcribe(model, processor, clips, transform=None, batch_size=32):
    """Greedy transcripts of ``clips`` by the unadapted base, each clip's log-mel input through ``transform``."""
    if transform is not None:
        processor = EqualisedProcessor(processor, transform)
    return generate_transcripts(model, processor, clips, DEFAULT_INSTRUCTION, batch_size=batch_size,
                                max_new_tokens=48, progress=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="mini_base")
    parser.add_argument("--condition", default="cardboard_box")
    parser.add_argument("--train", type=int, default=300, help="training utterances for the statistics")
    parser.add_argument("--eval", type=int, default=200, help="held-out utterances")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output_dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    from transformers import AutoProcessor

    data_args = DataArguments(condition=args.condition, num_train_utterances=args.train,
                              num_eval_utterances=args.eval, mic_fraction=0.0)
    _, eval_sets, corpus = build_demo_data(data_args, seed=0)
    base = resolve_base(args.base, REPO)
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(base).eval()
    extractor = processor.feature_extractor
    train = corpus["train"]
    mu_mic, sd_mic = bin_statistics(*log_mel(extractor, [audio_to_array(a) for a in train["mic_audio"]]))
    mu_ldv, sd_ldv = bin_statistics(*log_mel(extractor, [audio_to_array(a) for a in train["ldv_audio"]]))
    column = lambda x: x[:, None]  # noqa: E731
    transforms = {
        "none": None,
        "mean": lambda x: x + column(mu_mic - mu_ldv),
        "mean+var": lambda x: (x - column(mu_ldv)) * column(sd_mic / sd_ldv) + column(mu_mic),
        "utterance CMN": lambda x: x - x.mean(1, keepdims=True) + column(mu_mic),
        "utterance CMVN": lambda x: (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-3)
        * column(sd_mic) + column(mu_mic),
    }
    references = list(eval_sets["ldv"]["text"])
    ldv = [audio_to_array(a) for a in eval_sets["ldv"]["audio"]]
    mic = [audio_to_array(a) for a in eval_sets["mic"]["audio"]]
    mic_cer = compute_error_rates(transcribe(model, processor, mic), references)["cer"]
    rows = {name: compute_error_rates(transcribe(model, processor, ldv, f), references)["cer"]
            for name, f in transforms.items()}
    baseline = rows["none"]
    out = Path(args.output_dir)
    settings = dict(vars(args))
    if out.resolve().is_relative_to(REPO):  # the results record no machine path
        settings["output_dir"] = str(out.resolve().relative_to(REPO))
    results = {
        "settings": settings, "microphone_cer": mic_cer, "ldv_cer": rows,
        "gap_recovered": {k: (baseline - v) / (baseline - mic_cer) for k, v in rows.items()},
        "mean_offset_range": [float((mu_mic - mu_ldv).min()), float((mu_mic - mu_ldv).max())],
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "threads": args.threads, "torch": torch.__version__},
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontend_equalisation.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Closed-form log-mel equalisation on `{args.condition}` (no training)", "",
             f"Statistics from {args.train} training utterances; {args.eval} held-out utterances; microphone CER "
             f"{100 * mic_cer:.1f}%. The unadapted base transcribes every row.", "",
             "| front end | LDV CER (%) | gap recovered (%) |", "|---|---:|---:|"]
    lines += [f"| {name} | {100 * cer:.1f} | {100 * results['gap_recovered'][name]:.1f} |" for name, cer in rows.items()]
    lines += ["", f"Microphone-minus-LDV mean log-mel offset per bin: {results['mean_offset_range'][0]:.2f} to "
              f"{results['mean_offset_range'][1]:.2f}"
              + (" (the LDV clips are higher in every bin)" if results["mean_offset_range"][1] < 0 else "") + ". "
              f"{args.threads} torch thread(s), {os.cpu_count()} CPU cores; {results['wall_seconds']:.0f} s."]
    (out / "frontend_equalisation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
