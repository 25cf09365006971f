"""Every model family an auditor holds, on tiny offline models built from configs with
diffusers' and transformers' own classes: v-prediction and x_0-prediction converted to ε̂
exactly, SD 2.x-style folders with other schedulers, fp16 variant files, SDXL, Stable
Diffusion 3 (rectified flow) and DiT, each loaded, bound and attacked, with a LoRA where
diffusers loads one."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

import mia_utils as mu
from mia_utils import flow, pipelines, sampling, text2img
from mia_utils.attacks import clid, loss, noise_probe, pia, sima
from mia_utils.errors import CheckpointError
from mia_utils.latent import vae_config

from .conftest import SD_WORDS, sd_pipeline, tiny_unet

CAPTIONS = ["a thin handwritten digit seven", "a bold handwritten digit one", "", "a digit seven"]


def _clip(tokenizer, projection: bool, seed: int, hidden: int = 32):
    torch.manual_seed(seed)
    config = CLIPTextConfig(**text2img.text_encoder_config(len(tokenizer), hidden, max_length=tokenizer.model_max_length,
                                                           eos_token_id=tokenizer.eos_token_id))
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae(**kwargs):
    torch.manual_seed(3)
    return AutoencoderKL(**vae_config(8, 1, 4, (16, 32)), **kwargs)


def _nontrivial(module, seed: int = 5):
    """Weights drawn afresh (zero-initialised output layers would make every ε̂ trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


def sdxl_pipeline(folder):
    tokenizer = text2img.build_tokenizer(SD_WORDS, folder / "tok")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
                                cross_attention_dim=64, norm_num_groups=32)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1)
    return StableDiffusionXLPipeline(vae=_vae(scaling_factor=0.9), text_encoder=_clip(tokenizer, False, 1),
                                     text_encoder_2=_clip(tokenizer, True, 2), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=_nontrivial(unet), scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)


def sd3_pipeline(folder):
    tokenizer = text2img.build_tokenizer(SD_WORDS, folder / "tok")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=4, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=64,
                                        caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=8)
    return StableDiffusion3Pipeline(transformer=_nontrivial(transformer),
                                    scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=_vae(scaling_factor=1.5, shift_factor=0.1),
                                    text_encoder=_clip(tokenizer, True, 1), tokenizer=tokenizer,
                                    text_encoder_2=_clip(tokenizer, True, 2), tokenizer_2=tokenizer,
                                    text_encoder_3=None, tokenizer_3=None)


def dit_pipeline():
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(sample_size=4, patch_size=2, in_channels=4, out_channels=8, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, num_embeds_ada_norm=10,
                                        norm_num_groups=32)
    return DiTPipeline(transformer=_nontrivial(transformer), vae=_vae(),
                       scheduler=DDIMScheduler(), id2label={i: w for i, w in enumerate(
                           "zero one two three four five six seven eight nine".split())})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    sd2 = sd_pipeline(root / "sd2-src")  # an SD 2.x-style fine-tune: v-prediction, Euler scheduler
    sd2.scheduler = EulerDiscreteScheduler.from_config(sd2.scheduler.config, prediction_type="v_prediction")
    sd2.save_pretrained(root / "sd2", safe_serialization=True)
    out["sd2"] = root / "sd2"
    sd2.to(torch.float16).save_pretrained(root / "sd2-fp16", safe_serialization=True, variant="fp16")
    out["sd2-fp16"] = root / "sd2-fp16"
    for name, make in (("sdxl", sdxl_pipeline), ("sd3", sd3_pipeline)):
        pipe = make(root / f"{name}-src")
        pipe.save_pretrained(root / name, safe_serialization=True)
        net = pipe.transformer if name == "sd3" else pipe.unet
        text2img.add_lora(net, rank=4, seed=1)
        with torch.no_grad():
            for key, p in net.named_parameters():
                if "lora_B" in key:
                    p.normal_(0, 0.05)
        text2img.save_lora(net, root / f"{name}-lora", pipeline=type(pipe).__name__)
        out[name], out[f"{name}-lora"] = root / name, root / f"{name}-lora"
    dit_pipeline().save_pretrained(root / "dit", safe_serialization=True)
    out["dit"] = root / "dit"
    return out


@pytest.fixture(scope="module")
def latents():
    return torch.randn((4, 4, 4, 4), generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- predictions
@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_v_and_x0_predictions_are_converted_to_eps_exactly(prediction):
    unet = tiny_unet()
    model = mu.DiffusionModel(unet, DDPMScheduler(prediction_type=prediction), device="cpu")
    x = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 300, 900])
    with torch.no_grad():
        raw = unet(x, t).sample.double()
    ab = model.alpha_bar[t].view(-1, 1, 1, 1)
    want = (ab.sqrt() * raw + (1 - ab).sqrt() * x if prediction == "v_prediction"
            else (x - ab.sqrt() * raw) / (1 - ab).sqrt())
    torch.testing.assert_close(model.eps(x, t).double(), want, rtol=1e-5, atol=1e-5)
    # the same ε̂ as diffusers' DDIM derives for its step (an independent implementation)
    ddim = DDIMScheduler.from_config(model.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    ddim.set_timesteps(10)
    t0 = int(ddim.timesteps[3])
    step = ddim.step(unet(x, t0).sample.detach(), t0, x)
    mine, _ = sampling.ddim_step(model, x, t0, t0 - ddim.config.num_train_timesteps // 10)
    torch.testing.assert_close(mine, step.prev_sample, rtol=1e-4, atol=1e-4)


def test_sd2_style_folders_with_v_prediction_and_other_schedulers(folders, latents):
    target = pipelines.load_pipeline(folders["sd2"], device="cpu")
    model = target.model
    assert model.prediction_type == "v_prediction"
    euler = EulerDiscreteScheduler.from_pretrained(folders["sd2"] / "scheduler")
    torch.testing.assert_close(model.alpha_bar, euler.alphas_cumprod.double())
    assert target.pipeline.safety_checker is None
    view = target.bind(CAPTIONS)
    states = target.model.text(CAPTIONS)
    with torch.no_grad():
        v = target.pipeline.unet(latents, 200, encoder_hidden_states=states).sample.double()
    ab = model.alpha_bar[200]
    torch.testing.assert_close(view.eps(latents, 200).double(), ab.sqrt() * v + (1 - ab).sqrt() * latents,
                               rtol=1e-4, atol=1e-5)
    # a PNDM folder (SD 1.x as published) carries the same schedule
    pndm = PNDMScheduler.from_config(euler.config)
    torch.testing.assert_close(mu.DiffusionModel(tiny_unet(), DDPMScheduler.from_config(pndm.config)).alpha_bar,
                               model.alpha_bar)


def test_fp16_variant_files_load_upcast(folders, latents):
    full = pipelines.load_pipeline(folders["sd2"], device="cpu")
    half = pipelines.load_pipeline(folders["sd2-fp16"], device="cpu")
    index = json.loads((folders["sd2-fp16"] / "model_index.json").read_text())
    assert pipelines.variant(folders["sd2-fp16"], index) == "fp16"
    assert next(half.model.unet.parameters()).dtype == torch.float32
    a, b = full.bind(CAPTIONS).eps(latents, 100), half.bind(CAPTIONS).eps(latents, 100)
    assert 0 < (a - b).abs().max() < 5e-2  # the weights rounded to fp16, nothing else


def test_a_published_layout_with_a_safety_checker_entry_loads(folders, tmp_path):
    import shutil

    copy = tmp_path / "published"
    shutil.copytree(folders["sd2"], copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (copy / "model_index.json").write_text(json.dumps(index))
    assert pipelines.load_pipeline(copy, device="cpu").kind == "text-to-image"


# --------------------------------------------------------------------------- SDXL
def test_sdxl_conditions_on_both_encoders_pooled_embeddings_and_time_ids(folders, latents):
    target = pipelines.load_pipeline(folders["sdxl"], device="cpu")
    pipe = target.pipeline
    states, pooled, ids = target.model.text(CAPTIONS)
    assert states.shape == (4, pipe.tokenizer.model_max_length, 64) and pooled.shape == (4, 32)
    torch.testing.assert_close(ids, torch.tensor([[8.0, 8, 0, 0, 8, 8]] * 4))
    assert states[2].abs().sum() == 0 and pooled[2].abs().sum() == 0  # "" is zeros (force_zeros_for_empty_prompt)
    ref, _, ref_pooled, _ = pipe.encode_prompt(CAPTIONS[0], device="cpu", do_classifier_free_guidance=False)
    torch.testing.assert_close(states[0], ref[0])
    torch.testing.assert_close(pooled[0], ref_pooled[0])
    with torch.no_grad():
        want = pipe.unet(latents, 300, encoder_hidden_states=states,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
    torch.testing.assert_close(target.bind(CAPTIONS).eps(latents, 300), want, rtol=1e-4, atol=1e-5)
    lora = pipelines.load_pipeline(folders["sdxl"], lora=folders["sdxl-lora"], device="cpu")
    assert (lora.bind(CAPTIONS).eps(latents, 300) - want).abs().max() > 1e-4


# --------------------------------------------------------------------------- rectified flow
@pytest.fixture(scope="module")
def sd3(folders):
    return pipelines.load_pipeline(folders["sd3"], device="cpu")


def test_the_flow_schedule_is_the_vp_process_up_to_a_scale(sd3):
    model = sd3.model
    sig = model.flow_sigma
    assert model.prediction_type == "flow" and len(sig) == 1000 and 0 < sig[0] < sig[-1] < 1
    plain = torch.arange(1, 1001, dtype=torch.float64) / 1001
    torch.testing.assert_close(sig, 3 * plain / (1 + 2 * plain))  # SD3's shift 3
    x0, eps = torch.randn((2, 4, 4, 4), dtype=torch.float64), torch.randn((2, 4, 4, 4), dtype=torch.float64)
    for t in (0, 250, 999):
        s = float(sig[t])
        x_vp = model.q_sample(x0.float(), t, eps.float()).double()
        torch.testing.assert_close(flow.scale(sig[t]) * x_vp, (1 - s) * x0 + s * eps, rtol=1e-5, atol=1e-5)
    # the DDPM scheduler the samplers step holds the same ᾱ
    torch.testing.assert_close(model.scheduler.alphas_cumprod.double(), model.alpha_bar, rtol=1e-4, atol=1e-6)


def test_flow_eps_and_x0_from_the_velocity_by_hand(sd3, latents):
    model, pipe = sd3.model, sd3.pipeline
    states, pooled = model.text(CAPTIONS)
    view = sd3.bind(CAPTIONS)
    for t in (10, 500):
        s = float(model.flow_sigma[t])
        x_sigma = float(flow.scale(model.flow_sigma[t])) * latents
        with torch.no_grad():
            v = pipe.transformer(hidden_states=x_sigma, timestep=torch.full((4,), s * 1000),
                                 encoder_hidden_states=states, pooled_projections=pooled).sample
        torch.testing.assert_close(view.eps(latents, t), x_sigma + (1 - s) * v, rtol=1e-4, atol=1e-5)
        # x̂_0 by the VP formula is the flow's x_σ − σ v̂
        ab = float(model.alpha_bar[t])
        x0_vp = (latents - (1 - ab) ** 0.5 * view.eps(latents, t)) / ab ** 0.5
        torch.testing.assert_close(x0_vp, x_sigma - s * v, rtol=1e-3, atol=1e-4)


def test_the_eps_loss_is_the_velocity_loss_times_one_minus_sigma_squared(sd3, latents):
    model, pipe = sd3.model, sd3.pipeline
    states, pooled = model.text(CAPTIONS)
    view = sd3.bind(CAPTIONS)
    x0, eps, t = latents, torch.randn(latents.shape, generator=torch.Generator().manual_seed(1)), 400
    s = float(model.flow_sigma[t])
    x_sigma = (1 - s) * x0 + s * eps
    with torch.no_grad():
        v = pipe.transformer(hidden_states=x_sigma, timestep=torch.full((4,), s * 1000),
                             encoder_hidden_states=states, pooled_projections=pooled).sample
    v_loss = (v - (eps - x0)).pow(2).flatten(1).sum(1)
    e_loss = (view.eps(model.q_sample(x0, t, eps), t) - eps).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(e_loss, (1 - s) ** 2 * v_loss, rtol=1e-3, atol=1e-5)


def test_ddim_on_the_flow_is_the_flows_own_euler_step(sd3, latents):
    """Up and down: s' · DDIM_VP(x, t → t') = x_σ + (σ' − σ) v̂, and diffusers' FlowMatchEuler
    scheduler takes the same step from σ to σ'."""
    model, pipe = sd3.model, sd3.pipeline
    view = sd3.bind(CAPTIONS)
    states, pooled = model.text(CAPTIONS)
    for a, b in ((600, 300), (300, 600)):
        sa, sb = float(model.flow_sigma[a]), float(model.flow_sigma[b])
        x_sigma = float(flow.scale(model.flow_sigma[a])) * latents
        with torch.no_grad():
            v = pipe.transformer(hidden_states=x_sigma, timestep=torch.full((4,), sa * 1000),
                                 encoder_hidden_states=states, pooled_projections=pooled).sample
        stepped, _ = sampling.ddim_step(view, latents, a, b)
        got = float(flow.scale(model.flow_sigma[b])) * stepped
        torch.testing.assert_close(got, x_sigma + (sb - sa) * v, rtol=1e-3, atol=1e-4)
        if a > b:  # diffusers' own Euler step, on the same two σ (its shift undone: 1)
            euler = FlowMatchEulerDiscreteScheduler(shift=1.0)
            euler.set_timesteps(sigmas=[sa, sb])
            ref = euler.step(v, euler.timesteps[0], x_sigma).prev_sample
            torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_every_attack_runs_on_the_flow_model_and_its_lora(folders, sd3, latents):
    view = sd3.bind(CAPTIONS)
    scores = {"sima": sima.score(view, latents, t=50), "loss": loss.score(view, latents, t=100, n_noise=2),
              "pia": pia.score(view, latents, t=100), "clid": clid.score(view, latents, ts=[100, 300], n_noise=1),
              "probe": noise_probe.score(view, latents, noise="graybox", t_start=600, inversion_steps=4,
                                         generation_steps=4)}
    for name, s in scores.items():
        assert s.shape == (4,) and torch.isfinite(torch.as_tensor(s)).all(), name
    lora = pipelines.load_pipeline(folders["sd3"], lora=folders["sd3-lora"], device="cpu")
    assert (lora.bind(CAPTIONS).eps(latents, 50) - view.eps(latents, 50)).abs().max() > 1e-4
    # the VAE's shift factor: z = s · (μ − shift)
    images = torch.rand((2, 1, 8, 8)) * 2 - 1
    with torch.no_grad():
        mean = sd3.pipeline.vae.encode(images).latent_dist.mean
    torch.testing.assert_close(sd3.encode(images), (mean - 0.1) * 1.5, rtol=1e-4, atol=1e-5)


def test_flow_samples_through_the_vp_samplers(sd3):
    view = sd3.bind(["a digit seven"] * 2)
    z = sampling.ddim_sample(view, 2, num_inference_steps=4, progress=False)
    assert z.shape == (2, 4, 4, 4) and torch.isfinite(z).all()


# --------------------------------------------------------------------------- DiT
def test_dit_is_class_conditional_with_its_learned_variance_dropped(folders, latents):
    target = pipelines.load_pipeline(folders["dit"], device="cpu")
    assert target.kind == "class-to-image"
    labels = ["7", "3", "", "seven"]
    try:
        view = target.bind(labels)
    except ValueError as err:  # id2label is not saved by DiTPipeline: names need it, numbers do not
        assert "label names" in str(err)
        labels[3] = "0"
        view = target.bind(labels)
    with torch.no_grad():
        out = target.pipeline.transformer(latents, timestep=torch.full((4,), 100),
                                          class_labels=target.model.text(labels)).sample
    torch.testing.assert_close(target.model.text(labels)[:3], torch.tensor([7, 3, 10]))
    torch.testing.assert_close(view.eps(latents, 100), out[:, :4], rtol=1e-4, atol=1e-5)
    assert sima.score(view, latents, t=20).shape == (4,)
    with pytest.raises(ValueError, match="not a class"):
        target.bind(["12"])
    with pytest.raises(CheckpointError, match="LoRA"):
        pipelines.load_pipeline(folders["dit"], lora=folders["sd3-lora"], device="cpu")


def test_flux_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(CheckpointError, match="Flux"):
        pipelines.load_pipeline(tmp_path, device="cpu")


def test_gradients_and_training_refuse_models_that_do_not_predict_eps():
    model = mu.DiffusionModel(tiny_unet(), DDPMScheduler(prediction_type="v_prediction"), device="cpu")
    x = torch.zeros((2, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="ε-prediction UNet"):
        model.per_sample_layer_grad_norms(x, torch.zeros((2, 1), dtype=torch.long), x)
    with pytest.raises(ValueError, match="trains ε-prediction models"):
        mu.train.train_ddpm(model, torch.zeros((4, 1, 8, 8)), progress=False)
