"""Training time per epoch: the naive way against ours, measured in one process and reported as ratios.

    python benchmarks/bench_training.py [--base mini_base] [--threads 2] [--skip-real]

naive: the frozen audio tower re-run on the padded 30 s input every step, the adapter over all padded frames.
ours:  the tower's outputs from the feature cache (built once, its cost included), the adapter over valid frames.

Rows: `lm` and `distill` at the mini base's sizes (batch 8 of 1.5 s clips, per-step time x steps per epoch), and
`distill` at Qwen2-Audio's real audio shapes (d_model 1280, 32 encoder layers, 3000 mel frames, random weights,
7.5 s clips, `standard` adapter, batch 1; the 7B LLM does not fit this machine). Targets: `distill` >= 10x at the
real shapes, `lm` >= 1.5x at the mini sizes. The first epoch of ours includes building the cache; each later
epoch reuses it.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoProcessor, Qwen2AudioEncoder, Qwen2AudioEncoderConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_seconds  # noqa: E402

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration  # noqa: E402
from modeling_qwen2audio_ldv.adapters_qwen2audio_ldv import TransformerDomainAdapter  # noqa: E402
from modeling_qwen2audio_ldv.audio import SAMPLING_RATE  # noqa: E402
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio  # noqa: E402
from modeling_qwen2audio_ldv.training.objectives import distillation_loss  # noqa: E402


def epoch_seconds(step_seconds: float, clips: int, batch: int, cache_seconds_per_clip: float = 0.0) -> float:
    return step_seconds * -(-clips // batch) + cache_seconds_per_clip * clips


def mini_rows(base: str, batch: int, clip_seconds: float, clips: int, repeats: int):
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        base, adapter_config=DomainAdapterConfig.preset("standard", num_heads=4, ff_dim=512, zero_init=False))
    model.freeze_base_model().train()
    tower = model.model.audio_tower
    torch.manual_seed(0)
    audio = [0.1 * torch.randn(int(clip_seconds * SAMPLING_RATE)).numpy() for _ in range(batch)]
    prompt = "<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nTranscribe the audio.<|im_end|>\n" \
             "<|im_start|>assistant\nthree seven one nine<|im_end|>"
    inputs = processor(text=[prompt] * batch, audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                       padding=True)
    labels = inputs["input_ids"].clone()
    optimizer = torch.optim.AdamW(model.domain_adapter_parameters(), lr=1e-4)

    def step(loss_fn):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()

    def full_padded_features(features, mask):
        hidden, _ = encode_audio(tower, features, mask, trim=False)
        return hidden, torch.full((batch,), hidden.shape[1])  # naive: the adapter sees every padded frame

    # the cache: tower outputs (valid frames) computed once per clip
    with torch.no_grad():
        start = time.perf_counter()
        cached, lengths = encode_audio(tower, inputs["input_features"], inputs["feature_attention_mask"], trim=True)
        cache_per_clip = (time.perf_counter() - start) / batch

    def lm_naive():
        model.config.trim_audio_tower = False
        with torch.no_grad():
            hidden, _ = encode_audio(tower, inputs["input_features"], inputs["feature_attention_mask"], trim=False)
        full = torch.full((batch,), hidden.shape[1])
        adapted = model.apply_domain_adapter(hidden, full)  # over all padded frames
        valid = torch.arange(hidden.shape[1])[None] < lengths[:, None]
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        audio_mask = (inputs["input_ids"] == model.config.audio_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(audio_mask, model.model.multi_modal_projector(adapted)[valid])
        return model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], labels=labels).loss

    def lm_ours():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                     audio_encoder_hidden_states=cached, audio_encoder_lengths=lengths).loss

    def distill_naive():
        with torch.no_grad():
            student_in, full = full_padded_features(inputs["input_features"], inputs["feature_attention_mask"])
            teacher, _ = full_padded_features(inputs["input_features"], inputs["feature_attention_mask"])
        return distillation_loss(model.apply_domain_adapter(student_in, full), teacher, lengths)

    def distill_ours():
        return distillation_loss(model.apply_domain_adapter(cached, lengths), cached, lengths)

    rows = []
    for name, naive, ours, cache_clips in (("lm", lm_naive, lm_ours, 1), ("distill", distill_naive, distill_ours, 2)):
        naive_step = median_seconds(lambda: step(naive), repeats)
        ours_step = median_seconds(lambda: step(ours), repeats)
        naive_epoch = epoch_seconds(naive_step, clips, batch)
        ours_first = epoch_seconds(ours_step, clips, batch, cache_per_clip * cache_clips)
        rows.append((f"{name} (mini base)", naive_epoch, ours_first, epoch_seconds(ours_step, clips, batch)))
    return rows


def real_distill_row(clips: int, repeats: int):
    torch.manual_seed(0)
    tower = Qwen2AudioEncoder(Qwen2AudioEncoderConfig()).eval()  # d_model 1280, 32 layers, 128 mels
    tower.requires_grad_(False)
    adapter = TransformerDomainAdapter(DomainAdapterConfig.preset("standard", zero_init=False), 1280).train()
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    mel = torch.randn(2, 128, 3000)  # an LDV clip and its microphone pair
    mask = (torch.arange(3000)[None] < 750).long().expand(2, -1)  # 7.5 s
    with torch.no_grad():
        start = time.perf_counter()
        cached, lengths = encode_audio(tower, mel, mask, trim=True)
        cache_seconds = time.perf_counter() - start  # both clips of the pair
        padded, _ = encode_audio(tower, mel[:1], mask[:1], trim=False)
        naive_tower = median_seconds(lambda: encode_audio(tower, mel, mask, trim=False), repeats=1, warmup=0)

    def naive_step():
        optimizer.zero_grad()
        full = torch.ones(1, padded.shape[1], dtype=torch.bool)
        distillation_loss(adapter(padded, full), padded, lengths[:1]).backward()
        optimizer.step()

    def ours_step():
        optimizer.zero_grad()
        valid = torch.arange(cached.shape[1])[None] < lengths[:1, None]
        distillation_loss(adapter(cached[:1], valid), cached[1:], lengths[:1]).backward()
        optimizer.step()

    naive = naive_tower + median_seconds(naive_step, repeats)
    ours = median_seconds(ours_step, repeats)
    return ("distill (real audio shapes)", epoch_seconds(naive, clips, 1),
            epoch_seconds(ours, clips, 1, cache_seconds),  # the cache: an LDV clip and its mic pair
            epoch_seconds(ours, clips, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "mini_base"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=400, help="clips per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-real", action="store_true", help="skip the real-shape row (about a minute per step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = mini_rows(args.base, batch=8, clip_seconds=1.5, clips=args.clips, repeats=args.repeats)
    if not args.skip_real:
        rows.append(real_distill_row(args.clips, repeats=2))
    print(f"training time per epoch of {args.clips} clips, {args.threads} threads; ours: the first epoch builds the "
          "feature cache, later epochs reuse it")
    print(f"{'objective':<30} {'naive s':>10} {'ours 1st s':>11} {'x':>6} {'ours later s':>13} {'x':>7}")
    for name, naive, first, later in rows:
        print(f"{name:<30} {naive:10.1f} {first:11.1f} {naive / first:5.1f}x {later:13.1f} {naive / later:6.1f}x")


if __name__ == "__main__":
    main()
