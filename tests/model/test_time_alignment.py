"""Audio and video tokens share one time axis, and fusion attention follows it."""

from __future__ import annotations

import torch
from model_testkit import make_latents

from model.layers import Attention
from model.sequence import audio_latent_times, video_latent_times


def test_tokens_of_the_same_instant_get_the_same_temporal_position(debug_model):
    video, audio = make_latents()  # 5 latent frames at 25 fps, 17 audio latents at 25/s
    v_times, a_times = debug_model.token_times(video, audio, fps=25.0)
    per_frame = v_times.view(5, -1)
    assert (per_frame == per_frame[:, :1]).all()  # all spatial tokens of a frame share its time
    frame_times = per_frame[:, 0]
    # Latent 0 is frame 0 alone ([0, 40ms) -> 20ms): exactly audio latent 0's centre.
    assert frame_times[0] == a_times[0] == 0.02
    # Latent k covers frames 4k-3..4k: centre (4k - 1) / fps; the audio latent whose
    # 40ms interval contains that instant is the one nearest in position.
    torch.testing.assert_close(frame_times, torch.tensor([0.02, 0.12, 0.28, 0.44, 0.60]))
    for t in frame_times:
        j = int(t * 25)  # audio latent covering [j, j+1) / 25 s
        assert (a_times - t).abs().argmin() in (j, j - 1) and abs(a_times[j] - t) <= 0.02 + 1e-6


def test_time_positions_do_not_depend_on_rates_only_on_seconds():
    # 2 s of video at 24 fps vs 50 fps and audio at 25 vs 50 latents/s: the last token's
    # time stays near the clip end whatever the rate.
    for fps in (24.0, 50.0):
        frames = 1 + 4 * round(2 * fps / 4)
        t = video_latent_times(1 + (frames - 1) // 4, fps)
        assert abs(t[-1] - (frames - 2) / fps) < 1e-6 and t[-1] < frames / fps
    for rate in (25.0, 50.0):
        t = audio_latent_times(int(2 * rate), rate)
        assert abs(t[-1] - (2 - 0.5 / rate)) < 1e-6


def _attention_weights(model, query_times, key_times):
    """Attention of a fusion layer whose queries and keys have identical content, so the
    weights can only come from the temporal RoPE. Values are one-hot key ids, so the
    output rows *are* the attention weights."""
    n_keys, dim = len(key_times), 32
    attn = Attention(dim, heads=1, kv_dim=dim + n_keys, qk_norm=False)
    with torch.no_grad():
        for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out):
            lin.weight.zero_()
            lin.bias.zero_()
        attn.to_q.weight.copy_(torch.eye(dim))
        attn.to_k.weight[:, :dim] = torch.eye(dim)
        attn.to_v.weight[:n_keys, dim:] = torch.eye(n_keys)
        attn.to_out.weight.copy_(torch.eye(dim))
    content = torch.full((dim,), 3.0)
    q = content.expand(1, len(query_times), dim)
    kv = torch.cat([content.expand(n_keys, dim), torch.eye(n_keys)], 1)[None]
    (rope_q, rope_k), _ = model.fusion_ropes(query_times, key_times)
    rope_q = tuple(r[:, : dim // 2] for r in rope_q)
    rope_k = tuple(r[:, : dim // 2] for r in rope_k)
    with torch.no_grad():
        return attn(q, kv, rope_q=rope_q, rope_k=rope_k)[0, :, :n_keys]


def test_fusion_attention_peaks_at_the_same_instant(debug_model):
    video, audio = make_latents()
    v_times, a_times = debug_model.token_times(video, audio, fps=25.0)
    frame_times = v_times.view(5, -1)[:, 0]
    weights = _attention_weights(debug_model, frame_times, a_times)
    peaks = weights.argmax(-1)
    # The peak is an audio latent whose 40 ms interval holds the frame's instant (two
    # qualify when the instant falls on a boundary, e.g. 0.12 s between 0.10 and 0.14).
    assert ((a_times[peaks] - frame_times).abs() <= 0.02 + 1e-6).all()
    assert (weights.max(-1).values > 0.3).all()  # a clear peak, not a flat distribution
    # Delay the audio by 0.2 s (5 latents): the peaks move 5 latents earlier.
    shifted = _attention_weights(debug_model, frame_times, a_times + 0.2).argmax(-1)
    delayed_times = a_times[shifted] + 0.2
    assert ((delayed_times - frame_times)[2:].abs() <= 0.02 + 1e-6).all()
    assert (shifted[2:] < peaks[2:]).all()
