"""Text-to-image diffusion: the conditional hook, captions bound to images, tiny SD pipelines.

A Stable-Diffusion-shaped target has three parts: a text encoder (CLIP) that turns a caption
into hidden states c = τ(caption) [L, D]; a VAE whose scaled posterior mean z_0 = s · μ(x)
is what the UNet diffuses; and a ``UNet2DConditionModel`` ε̂(z_t, t, c). The attacks see it as
a ``DiffusionModel`` on latents, **bound** to one caption per image::

    view = model.bind(captions, guidance=γ)
    view.eps(z_t, t) = ε̂(z_t, t, c_i)                           (γ = 1: one query per row)
                     = ε̂(z_t, t, ∅) + γ (ε̂(z_t, t, c_i) − ε̂(z_t, t, ∅))   (γ ≠ 1: two queries)

Row i of every query is image i: the attacks of ``mia_utils.attacks`` that query each image
once per call (SimA, loss, PIA, SecMI, CLiD, Wen et al., the noise probe) run on a bound view
unchanged; a call with another number of rows is refused rather than mis-paired. ∅ is the
empty prompt's states (what caption dropout trains and classifier-free guidance uses). Text
states are computed once per distinct caption and cached; ``TextEncoder.passes`` counts them,
apart from the UNet's queries (``DiffusionModel.queries``) and the VAE's passes
(``LatentCodec.encoder_queries`` / ``decoder_queries``).

The zoo's tiny pipeline is built here from configs (nothing downloaded): a CLIP tokenizer whose
byte-pair merges spell each caption word as one token, a 2-layer CLIP text encoder, an
``AutoencoderKL`` and a ``UNet2DConditionModel`` with cross-attention, saved as an ordinary
``StableDiffusionPipeline`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .models import DiffusionModel, default_scheduler


class TextEncoder:
    """Captions → the condition the denoiser takes, through the pipeline's own ``encode_prompt``
    (so its tokenisation, truncation and clip-skip rules hold), one caption at a time (a
    caption's condition does not depend on which others are encoded with it), cached:

    * Stable Diffusion 1.x / 2.x: the text states [N, L, D];
    * SDXL: (states [N, L, D] of both encoders, pooled embedding [N, P], time ids [N, 6]); the
      time ids are (H, W, 0, 0, H, W): the image's own size, uncropped; the empty prompt is
      zeros where the pipeline says so (``force_zeros_for_empty_prompt``), as its guidance is;
    * Stable Diffusion 3: (joint states [N, L, D], pooled embedding [N, P]) of its CLIP (and T5,
      when present) encoders;
    * DiT: the class label [N] (a caption is a label name of the pipeline's ``id2label`` or a
      class number; the empty caption is the null class, the one guidance drops to).
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.cache: dict[str, object] = {}
        self.passes = 0

    def _encode(self, caption: str):
        p, name = self.pipeline, type(self.pipeline).__name__
        if name == "DiTPipeline":
            return torch.tensor(_class_label(p, caption))
        if name == "StableDiffusionXLPipeline":
            states, _, pooled, _ = p.encode_prompt(caption, device=p.device, num_images_per_prompt=1,
                                                   do_classifier_free_guidance=False)
            side = p.unet.config.sample_size * p.vae_scale_factor
            ids = p._get_add_time_ids((side, side), (0, 0), (side, side), dtype=states.dtype,
                                      text_encoder_projection_dim=p.text_encoder_2.config.projection_dim)
            if caption == "" and p.config.force_zeros_for_empty_prompt:
                states, pooled = torch.zeros_like(states), torch.zeros_like(pooled)
            return states[0].float().cpu(), pooled[0].float().cpu(), ids[0].float().cpu()
        if name == "StableDiffusion3Pipeline":
            states, _, pooled, _ = p.encode_prompt(caption, caption, caption, device=p.device,
                                                   num_images_per_prompt=1, do_classifier_free_guidance=False)
            return states[0].float().cpu(), pooled[0].float().cpu()
        states, _ = p.encode_prompt(caption, p.device, 1, False)
        return states[0].float().cpu()

    def __call__(self, captions):
        captions = list(captions)
        bad = [c for c in captions if not isinstance(c, str)]
        if bad:
            raise TypeError(f"captions must be strings; got {type(bad[0]).__name__}.")
        for caption in dict.fromkeys(captions):
            if caption not in self.cache:
                with torch.no_grad():
                    self.cache[caption] = self._encode(caption)
                self.passes += type(self.pipeline).__name__ != "DiTPipeline"
        if not captions:
            raise ValueError("No captions given.")
        first = self.cache[captions[0]]
        if isinstance(first, tuple):
            return tuple(torch.stack([self.cache[c][k] for c in captions]) for k in range(len(first)))
        return torch.stack([self.cache[c] for c in captions])


def _class_label(pipeline, caption: str) -> int:
    """A DiT caption as its class: "" the null class, a number as it is, a name through ``id2label``."""
    classes = pipeline.transformer.config.num_embeds_ada_norm
    if caption == "":
        return classes  # the null label, the one classifier-free guidance uses
    if caption.strip().isdigit() and int(caption) < classes:
        return int(caption)
    if caption.strip() in pipeline.labels:
        return pipeline.labels[caption.strip()]
    raise ValueError(f"{caption!r} is not a class of this DiT: give a class number below {classes} or one of its "
                     f"{len(pipeline.labels)} label names (model_index.json's id2label).")


class ConditionalDiffusionModel(DiffusionModel):
    """A conditional denoiser on latents (SD's UNet, SDXL's, SD3's or DiT's transformer), with
    its condition encoder (``TextEncoder``).

    As ``DiffusionModel`` (the same hook, query count, precision); queried through ``bind``.
    """

    def __init__(self, unet, scheduler: DDPMScheduler, text: TextEncoder, device="auto",
                 batch_size: int = 256, dtype: str = "fp32"):
        super().__init__(unet, scheduler, device=device, batch_size=batch_size, dtype=dtype)
        self.text = text
        self.input_range = None  # latents, not pixels

    def blank_condition(self, n: int) -> torch.Tensor:
        """The empty prompt's states, n times: ε̂(z_t, t, ∅)."""
        return self.text([""] * n)

    def bind(self, captions, guidance: float = 1.0) -> Conditioned:
        """This model with caption i conditioning row i of every query (see the module)."""
        return Conditioned(self, captions, guidance)

    def __repr__(self) -> str:
        return "Conditional" + super().__repr__()


class Conditioned:
    """A text-conditional model bound to one caption per image, at guidance γ: what attacks take.

    Everything but ``eps`` and ``clean_images`` is the model's own (schedule, query counter,
    device). ``eps(..., null=True)`` queries with the empty prompt, the unconditional ε̂.
    """

    def __init__(self, model: ConditionalDiffusionModel, captions, guidance: float = 1.0):
        if not isinstance(model, ConditionalDiffusionModel):
            raise TypeError("bind() needs a text-conditional model.")
        self.model = model
        self.captions = list(captions)
        self.guidance = float(guidance)
        self.condition = model.text(self.captions)
        self.null = model.blank_condition(len(self.captions))

    def __getattr__(self, name):
        return getattr(self.model, name)

    def _rows(self, n: int) -> None:
        if n != len(self.captions):
            raise ValueError(f"This view is bound to {len(self.captions)} captions, one per image, but {n} rows "
                             "were given: bind the captions of exactly these images.")

    def clean_images(self, images) -> torch.Tensor:
        x = self.model.clean_images(images)
        self._rows(len(x))
        return x

    def eps(self, x_t: torch.Tensor, t, batch_size: int | None = None, grad: bool = False,
            null: bool = False) -> torch.Tensor:
        """ε̂ with each row's caption at the view's guidance (``null``: the empty prompt's ε̂).
        Counts 1 query per row at γ = 1 or with ``null``, 2 otherwise."""
        self._rows(len(x_t))
        if null:
            return self.model.eps(x_t, t, batch_size, grad, condition=self.null)
        cond = self.model.eps(x_t, t, batch_size, grad, condition=self.condition)
        if self.guidance == 1.0:
            return cond
        uncond = self.model.eps(x_t, t, batch_size, grad, condition=self.null)
        return uncond + self.guidance * (cond - uncond)

    def __repr__(self) -> str:
        return f"Conditioned({self.model!r}, {len(self.captions)} captions, guidance={self.guidance:g})"


# --------------------------------------------------------------------------- tiny pipelines
def build_tokenizer(words, folder: str | Path, max_length: int = 16):
    """A CLIP tokenizer over ``words`` (lower-case ASCII letters), saved to ``folder``.

    CLIP's tokenizer is byte-pair encoding: a word becomes characters (the last one marked
    ``</w>``) that are merged pair by pair, lowest-ranked merge first. Its vocabulary must hold
    every character and every intermediate merge, or words fall apart into unknown tokens. Here
    each word is merged left to right (``s e`` → ``se``, ``se v`` → ``sev`` …), so each word is one
    token. Written here because no library builds a BPE vocabulary offline from a word list
    (``tokenizers``' trainer learns merges from frequencies and may split rare words).
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for w in words})
    bad = [w for w in words if not w.isascii() or not w.isalpha() or not w.islower()]
    if bad:
        raise ValueError(f"caption words must be lower-case ASCII letters; got {bad[0]!r}.")
    vocab, merges = {}, []

    def add(token):
        vocab.setdefault(token, len(vocab))

    for c in "abcdefghijklmnopqrstuvwxyz":
        add(c)
        add(c + "</w>")
    for w in words:
        # run BPE on the word with the merges so far; while it ends in more than one token, append the
        # merge of its first two (last in rank, so the words before, already one token, are untouched)
        while len(parts := _bpe(list(w[:-1]) + [w[-1] + "</w>"], merges)) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            add(parts[0] + parts[1])
    for special in ("<|startoftext|>", "<|endoftext|>"):
        add(special)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                              pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    for w in words:  # each word one token: the vocabulary is complete
        ids = tokenizer(w, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"the tokenizer splits {w!r} into {len(ids)} tokens.")
    return tokenizer


def _bpe(parts: list[str], merges: list[str]) -> list[str]:
    """Byte-pair encoding of one word as CLIP's tokenizer does it: merge the adjacent pair of
    lowest rank (every occurrence), until no listed pair is left."""
    rank = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    while len(parts) > 1:
        pairs = [(rank[p], p) for p in zip(parts, parts[1:]) if p in rank]
        if not pairs:
            break
        first, second = min(pairs)[1]
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == (first, second):
                merged.append(first + second)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def text_encoder_config(vocab_size: int, hidden: int = 32, layers: int = 2, max_length: int = 16,
                        eos_token_id: int = 2) -> dict:
    """A tiny CLIPTextConfig (as diffusers' own SD tests use): 2 layers of width 32."""
    return {"vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers, "num_attention_heads": 4, "max_position_embeddings": max_length,
            "eos_token_id": eos_token_id, "bos_token_id": eos_token_id - 1, "pad_token_id": eos_token_id,
            "projection_dim": hidden}


def conditional_unet_config(sample_size: int = 4, channels: int = 4, cross_attention_dim: int = 32,
                            block_out_channels: tuple[int, ...] = (32, 64)) -> dict:
    """A UNet2DConditionModel config for tiny latents: cross-attention to the text in every block
    but the first down and last up block, one layer per block."""
    n = len(block_out_channels)
    return {"sample_size": sample_size, "in_channels": channels, "out_channels": channels,
            "block_out_channels": list(block_out_channels), "layers_per_block": 1,
            "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1),
            "up_block_types": ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"],
            "cross_attention_dim": cross_attention_dim, "attention_head_dim": 8,
            "norm_num_groups": min(32, block_out_channels[0])}


def tiny_pipeline(words, vae, unet_config: dict, folder: str | Path, text_hidden: int = 32, seed: int = 0):
    """A ``StableDiffusionPipeline`` from configs: the tokenizer over ``words`` (written into
    ``folder/tokenizer``), a CLIP text encoder initialised from ``seed`` (frozen, as SD's is), the
    trained ``vae`` and an untrained UNet of ``unet_config``; DDPM's linear schedule, T = 1000."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel


    tokenizer = build_tokenizer(words, Path(folder) / "tokenizer")
    torch.manual_seed(seed)
    config = text_encoder_config(len(tokenizer), text_hidden, max_length=tokenizer.model_max_length,
                                 eos_token_id=tokenizer.eos_token_id)
    config["bos_token_id"] = tokenizer.bos_token_id
    text_encoder = CLIPTextModel(CLIPTextConfig(**config)).eval()
    unet = UNet2DConditionModel(**unet_config)
    # DDPM's schedule; steps_offset 1 as StableDiffusionPipeline expects of a sampler's config
    scheduler = DDPMScheduler.from_config(default_scheduler(clip_sample=False).config, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def add_lora(unet, rank: int = 4, alpha: float | None = None, seed: int = 0) -> None:
    """Attach a LoRA adapter (peft, through diffusers' ``add_adapter``) to the attention
    projections of ``unet``; only the adapter's weights train afterwards. W' = W + (α/r) B A,
    A [r, d] random, B zero (the adapter starts as the identity)."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))


def save_lora(unet, folder: str | Path, pipeline: str = "StableDiffusionPipeline") -> Path:
    """The adapter of ``unet`` (a UNet, or SD3's transformer) in diffusers' LoRA format
    (``pytorch_lora_weights.safetensors``), what ``pipeline``'s ``load_lora_weights`` reads
    (StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline)."""
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    key = "transformer_lora_layers" if pipeline == "StableDiffusion3Pipeline" else "unet_lora_layers"
    getattr(diffusers, pipeline).save_lora_weights(folder, **{key: layers}, safe_serialization=True)
    return folder
