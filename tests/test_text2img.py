"""Text-to-image targets: diffusers-written SD folders, captions, LoRA, CLiD and Wen et al.

The pipeline under test is built from diffusers' and transformers' own classes and written by
diffusers' ``save_pretrained`` (only the tokenizer comes from ``text2img.build_tokenizer``), so
loading is tested on the format auditors hold, not on the zoo's builder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

import mia_utils as mu
from mia_utils import pipelines, text2img
from mia_utils.attacks import ATTACKS, clid, loss, pia, secmi, sima, wen
from mia_utils.models import CheckpointError
from mia_utils.noise import generators

CAPTIONS = ["a thin handwritten digit seven", "a bold handwritten digit one", "", "a digit seven",
            "a thin handwritten digit seven", "a bold digit one", "one"]


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd


@pytest.fixture(scope="module")
def target(sd):
    return pipelines.load_pipeline(sd["folder"], device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def latents(target, digits):
    return target.encode(digits[:7])


def _states(pipe, caption):
    ids = pipe.tokenizer(caption, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0][0]


def _unet(pipe, z, t, states):
    with torch.no_grad():
        return pipe.unet(z[None], torch.tensor([t]), encoder_hidden_states=states[None]).sample[0].double()


def test_a_diffusers_sd_folder_loads_as_a_text_to_image_target(target, sd, digits):
    assert target.kind == "text-to-image" and target.conditional
    assert target.image_shape == (1, 8, 8) and target.model.sample_shape == (4, 4, 4)
    vae = AutoencoderKL.from_pretrained(sd["folder"] / "vae")
    with torch.no_grad():
        expected = vae.encode(digits[:3]).latent_dist.mean * 0.7
    torch.testing.assert_close(target.encode(digits[:3]), expected, rtol=1e-5, atol=1e-6)
    # the attacks' schedule is the pipeline's (scaled-linear SD betas), not DDPM's default
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    torch.testing.assert_close(target.model.alpha_bar.float(), torch.cumprod(1 - betas, 0))


def test_the_tokenizer_spells_every_word_as_one_token(tmp_path):
    words = "a thin bold regular handwritten digit zero one two three four five six seven eight nine".split()
    tok = text2img.build_tokenizer(words, tmp_path)
    ids = [tok(w, add_special_tokens=False).input_ids for w in words]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids} | {tok.unk_token_id}) == len(words) + 1  # distinct, none unknown


def test_bound_eps_is_the_unet_on_each_images_own_caption(target, latents):
    pipe, model = target.pipeline, target.model
    view = target.bind(CAPTIONS)
    model.reset_queries()
    got = view.eps(latents, 300).double()
    assert model.queries == 7
    for i, caption in enumerate(CAPTIONS):
        torch.testing.assert_close(got[i], _unet(pipe, latents[i], 300, _states(pipe, caption)), rtol=1e-4, atol=1e-5)
    # classifier-free guidance: ε̂(∅) + γ (ε̂(c) − ε̂(∅)), two queries a row
    guided = target.bind(CAPTIONS, guidance=3.5)
    model.reset_queries()
    got = guided.eps(latents, 300).double()
    assert model.queries == 14
    for i, caption in enumerate(CAPTIONS):
        e_c, e_0 = _unet(pipe, latents[i], 300, _states(pipe, caption)), _unet(pipe, latents[i], 300, _states(pipe, ""))
        torch.testing.assert_close(got[i], e_0 + 3.5 * (e_c - e_0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bound to 7 captions"):
        view.eps(latents[:3], 300)
    with pytest.raises(ValueError, match="is conditional"):
        model.eps(latents, 300)


def test_text_states_are_cached_per_caption(target):
    text = target.model.text
    before = text.passes
    target.bind(["a digit seven"] * 5 + ["a digit one"])
    target.bind(["a digit one", "a digit seven"])
    assert text.passes - before <= 2


@pytest.mark.parametrize("attack", [sima.score, loss.score, pia.score, secmi.score])
def test_pixel_attacks_run_in_latent_space_with_captions(attack, target, latents):
    view = target.bind(CAPTIONS)
    s = attack(view, latents)
    assert s.shape == (7,) and np.isfinite(s).all()
    # each score depends on the image's own caption only
    np.testing.assert_allclose(attack(target.bind(CAPTIONS[2:5]), latents[2:5]), s[2:5], rtol=1e-3)


def test_sima_on_a_bound_view_by_hand(target, latents):
    pipe = target.pipeline
    s = sima.score(target.bind(CAPTIONS), latents, t=50, p=4)
    for i, caption in enumerate(CAPTIONS):
        e = _unet(pipe, latents[i], 50, _states(pipe, caption))
        assert s[i] == pytest.approx(-float(e.abs().pow(4).sum() ** 0.25), rel=1e-4)


def _noises(z, seed, salt, count):
    gen = generators(z[None], seed, salt)[0]
    return [torch.randn(tuple(z.shape), generator=gen) for _ in range(count)]


def test_clid_against_a_brute_force_loop(target, latents):
    pipe, model = target.pipeline, target.model
    ts, k, lam = (100, 400), 2, 0.3
    got = clid.score(target.bind(CAPTIONS), latents, ts=ts, n_noise=k, lam=lam, seed=5)
    ab = model.alpha_bar
    for i, caption in enumerate(CAPTIONS):
        noises = iter(_noises(latents[i], 5, "clid", len(ts) * k))
        l_c = l_0 = 0.0
        for t in ts:
            for _ in range(k):
                eps = next(noises)
                x_t = (ab[t].sqrt() * latents[i].double() + (1 - ab[t]).sqrt() * eps.double()).float()
                l_c += float((eps.double() - _unet(pipe, x_t, t, _states(pipe, caption))).pow(2).sum())
                l_0 += float((eps.double() - _unet(pipe, x_t, t, _states(pipe, ""))).pow(2).sum())
        l_c, l_0 = l_c / 4, l_0 / 4
        assert got[i] == pytest.approx(l_0 - l_c - lam * l_c, rel=1e-3, abs=1e-4)
    # the empty caption is the null condition itself: D = 0
    assert clid.score(target.bind(CAPTIONS), latents, ts=ts, n_noise=k)[2] == 0.0


def test_wen_against_a_brute_force_loop(target, latents):
    pipe, model = target.pipeline, target.model
    ts = (500, 900)
    got = wen.score(target.bind(CAPTIONS), latents, ts=ts, seed=2)
    ab = model.alpha_bar
    for i, caption in enumerate(CAPTIONS):
        noises = iter(_noises(latents[i], 2, "wen", len(ts)))
        total = 0.0
        for t in ts:
            eps = next(noises)
            x_t = (ab[t].sqrt() * latents[i].double() + (1 - ab[t]).sqrt() * eps.double()).float()
            diff = _unet(pipe, x_t, t, _states(pipe, caption)) - _unet(pipe, x_t, t, _states(pipe, ""))
            total += float(diff.norm())
        assert got[i] == pytest.approx(total / 2, rel=1e-3, abs=1e-6)
    assert got[2] == pytest.approx(0.0, abs=1e-9)  # the empty caption is the null condition


@pytest.mark.parametrize("name", ["clid", "wen"])
def test_conditional_attacks_keep_the_contract(name, target, latents):
    attack, model = ATTACKS[name], target.model
    model.reset_queries()
    s = attack(target.bind(CAPTIONS), latents)
    assert model.reset_queries() == 7 * attack.queries_per_image()
    assert s.dtype == np.float64 and np.isfinite(s).all()
    perm = [3, 0, 6, 1, 5, 2, 4]
    np.testing.assert_allclose(attack(target.bind([CAPTIONS[i] for i in perm]), latents[perm]), s[perm], rtol=1e-3)
    model.batch_size = 2
    try:
        np.testing.assert_allclose(attack(target.bind(CAPTIONS), latents), s, rtol=1e-3)
    finally:
        model.batch_size = 3
    with pytest.raises(TypeError, match="bound to the images' captions"):
        attack(model, latents)
    with pytest.raises(ValueError, match="guidance 1"):
        attack(target.bind(CAPTIONS, guidance=2.0), latents)


def test_a_lora_adapter_is_the_low_rank_update_of_its_file(sd, target, latents):
    """The adapter loaded through diffusers gives the ε̂ of the base UNet whose projections were
    updated by hand from the file: W' = W + (α/r) B A, α = r here (diffusers' default scale 1)."""
    import copy

    from safetensors.torch import load_file

    lora = pipelines.load_pipeline(sd["folder"], lora=sd["lora"], device="cpu")
    assert lora.lora == sd["lora"]
    weights = load_file(sd["lora"] / "pytorch_lora_weights.safetensors")
    merged = copy.deepcopy(target.pipeline)
    params = dict(merged.unet.named_parameters())
    downs = [k for k in weights if k.endswith(".lora.down.weight")]
    assert len(downs) == 32  # q, k, v, out of 8 attention layers
    with torch.no_grad():
        for down in downs:
            module = down[len("unet."):-len(".lora.down.weight")]
            up = weights[down.replace(".lora.down.", ".lora.up.")]
            params[f"{module}.weight"] += up @ weights[down]
    for caption in (CAPTIONS[0], ""):
        got = lora.bind([caption]).eps(latents[:1], 200)[0].double()
        torch.testing.assert_close(got, _unet(merged, latents[0], 200, _states(merged, caption)), rtol=1e-4, atol=1e-5)
    base = target.bind([CAPTIONS[0]]).eps(latents[:1], 200)[0].double()
    assert (got - base).abs().max() > 1e-3


def test_bad_pipelines_get_one_clear_error(sd, tmp_path, capfd):
    import shutil

    capfd.readouterr()
    with pytest.raises(CheckpointError, match=r"does not fit this pipeline's UNet \(size mismatch for .*torch.Size"):
        pipelines.load_pipeline(sd["folder"], lora=sd["lora_other"], device="cpu")
    assert "size mismatch" not in "".join(capfd.readouterr())  # our one sentence, not diffusers' 58 lines
    broken = tmp_path / "no-vae"
    shutil.copytree(sd["folder"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="component 'vae'"):
        pipelines.load_pipeline(broken, device="cpu")
    other = tmp_path / "kandinsky"
    shutil.copytree(sd["folder"], other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(CheckpointError, match="supported pipelines: DDPMPipeline"):
        pipelines.load_pipeline(other, device="cpu")
    pickled = tmp_path / "pickled"
    shutil.copytree(sd["folder"], pickled)
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not to be unpickled")
    # a published folder: a .bin beside the .safetensors is never read
    assert pipelines.load_pipeline(pickled, device="cpu").kind == "text-to-image"
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="pickled weights"):
        pipelines.load_pipeline(pickled, device="cpu")
    lora_pickled = tmp_path / "lora-pickled"
    lora_pickled.mkdir()
    (lora_pickled / "pytorch_lora_weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickled weights"):
        pipelines.load_pipeline(sd["folder"], lora=lora_pickled, device="cpu")


def test_the_vae_encodes_one_image_at_a_time_with_the_latents_of_a_whole_batch(target, digits):
    """diffusers' VAE slicing bounds a large batch's memory to one image's: on, and the latents
    equal those of the batch encoded whole (each image is encoded on its own)."""
    vae = target.codec.vae
    assert vae.use_slicing
    sliced = target.encode(digits[:5])
    vae.disable_slicing()
    try:
        whole = target.encode(digits[:5])
    finally:
        vae.enable_slicing()
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)


def test_images_the_vae_cannot_encode_are_refused(target):
    with pytest.raises(CheckpointError, match="resize them to 8x8"):
        target.encode(torch.zeros(2, 1, 12, 12))
    with pytest.raises(CheckpointError, match="1 channel"):
        target.encode(torch.zeros(2, 3, 8, 8))


def _folder(tmp_path, digits, lines):
    folder = mu.images.save_image_folder(digits[:4], tmp_path / "imgs")
    files = sorted(p.name for p in folder.iterdir())
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines(files)) + "\n")
    return folder, files


def test_captions_come_from_metadata_jsonl(tmp_path, digits):
    folder, files = _folder(tmp_path, digits, lambda fs: [{"file_name": f, "text": f"cap {f}"} for f in reversed(fs)])
    assert mu.images.read_captions(folder, files) == [f"cap {f}" for f in files]
    other = mu.images.save_image_folder(digits[10:14], tmp_path / "plain")
    # one side captioned, the other not: refused (the members got their captions, the non-members
    # the empty prompt, and CLiD read the difference: 0.406 -> 0.688)
    with pytest.raises(mu.data.DataError, match="members have captions .* but the nonmembers have none"):
        mu.data.load_membership_sets(folder, other, calibration_fraction=0.5)
    (other / "metadata.jsonl").write_text("".join(json.dumps({"file_name": p.name, "text": ""}) + "\n"
                                                  for p in sorted(other.glob("*.png"))))
    sets = mu.data.load_membership_sets(folder, other, calibration_fraction=0.5)
    members = sets.captions_of("members")
    assert sorted(members) == sorted(f"cap {f}" for f in files)
    assert sets.captions_of("nonmembers") == [""] * 4  # captioned with the empty prompt, on purpose
    # a metadata.jsonl that is no regular file is an error, not "no captions"
    (other / "metadata.jsonl").unlink()
    (other / "metadata.jsonl").symlink_to("/dev/zero")
    with pytest.raises(mu.data.DataError, match="metadata.jsonl is not a regular file"):
        mu.images.read_captions(other, [p.name for p in sorted(other.glob("*.png"))])
    # each caption stays with its image through the seeded split
    by_hash = dict(zip(mu.images.image_hashes(digits[:4]), (f"cap {f}" for f in files)))
    assert [by_hash[h] for h in mu.images.image_hashes(sets.members())] == members


@pytest.mark.parametrize("lines, match", [
    (lambda fs: [{"file_name": f, "text": "x"} for f in fs[:-1]], "no caption for 1 image"),
    (lambda fs: [{"file_name": f, "text": "x"} for f in fs] + [{"file_name": "ghost.png", "text": "x"}],
     "not images of the folder"),
    (lambda fs: [{"file_name": f, "text": 3} for f in fs], "two strings"),
    (lambda fs: [{"file_name": fs[0], "text": "x"}] * 2, "captioned twice"),
])
def test_bad_metadata_is_one_clear_error(tmp_path, digits, lines, match):
    folder, files = _folder(tmp_path, digits, lines)
    with pytest.raises(mu.data.DataError, match=match):
        mu.images.read_captions(folder, files)


def test_a_captions_file_that_is_not_utf8_names_itself(tmp_path, digits):
    folder, files = _folder(tmp_path, digits, lambda fs: [{"file_name": f, "text": "x"} for f in fs])
    (folder / "metadata.jsonl").write_bytes('{"file_name": "a", "text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(mu.data.DataError, match=r"metadata.jsonl is not UTF-8 text \(byte \d+\): save"):
        mu.images.read_captions(folder, files)


def test_the_conditional_training_step_learns_captions(target, digits):
    """train_ddpm on (latents, captions) lowers the conditional loss of what it saw."""
    import copy

    from mia_utils.train import TrainConfig, train_ddpm

    model = copy.deepcopy(target.model)
    z = target.encode(digits[:8])
    caps = [CAPTIONS[i % 7] for i in range(8)]
    before = -loss.score(model.bind(caps), z, t=100, n_noise=4).mean()
    train_ddpm(model, z, TrainConfig(steps=40, batch_size=8, lr=2e-3, warmup_steps=1, log_every=10),
               progress=False, condition=model.text(caps), uncond_prob=0.2)
    assert -loss.score(model.bind(caps), z, t=100, n_noise=4).mean() < before


def test_the_guided_noise_probe_study_against_the_attack_called_directly(sd, target):
    """studies.text_to_image.noise_probe_guidance: latent MSE at γ₁ = 1 is the registry's noise probe on the bound
    target and base; pixel MSE is the decoded regeneration's, by hand; queries double under guidance."""
    from mia_utils.attacks import noise_probe

    sets = mu.load_membership_sets(sd["members"], sd["nonmembers"], model=target, n_eval=6)
    study = mu.studies.text_to_image.noise_probe_guidance(target, target, sets, [1.0, 2.0], 1.0, 1.0, inversion_steps=3,
                                            generation_steps=2, n_boot=0)
    z = target.encode(sets.members_eval)
    caps = sets.captions_of("members_eval")
    direct = noise_probe.score(target.bind(caps), z, base=target.bind(caps), inversion_steps=3, generation_steps=2)
    np.testing.assert_allclose(study["scores"][1.0]["latent MSE"]["members_eval"], direct, rtol=1e-6)
    x_init = noise_probe.initial_noise(target.bind(caps), z, "semantic", target.bind(caps), 999, 3)
    regen = noise_probe.ddim_generate(target.bind(caps, guidance=2.0), x_init, 999, 2)
    pixels = target.codec.decode(regen)
    by_hand = -(sets.members_eval.double() - pixels.double()).pow(2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(study["scores"][2.0]["pixel MSE"]["members_eval"], by_hand, rtol=1e-6)
    rows = study["rows"]
    assert rows[1.0]["pixel MSE"]["queries_per_image"] == 3 + 2 and rows[2.0]["pixel MSE"]["queries_per_image"] == 3 + 4
    # at the assumed guidance the transferred threshold is the re-calibrated one
    for m in mu.studies.text_to_image.PROBE_METRICS:
        assert rows[1.0][m]["balanced_accuracy"] == rows[1.0][m]["own_threshold_accuracy"]


def test_ddpm_and_ldm_pipeline_folders_written_by_diffusers_load(tmp_path, digits):
    """model_index.json folders of the other supported classes: a DDPMPipeline is a pixel target,
    an LDMPipeline (VQ first stage) a latent one whose latents are the VQ encoder's, unquantised,
    times the VQ model's scaling factor (LDMPipeline divides by it before decoding)."""
    from diffusers import DDIMScheduler, DDPMPipeline, LDMPipeline, UNet2DModel, VQModel

    from mia_utils.zoo import small_unet_config

    torch.manual_seed(0)
    DDPMPipeline(unet=UNet2DModel(**small_unet_config(block_out_channels=(8, 16))),
                 scheduler=mu.models.default_scheduler()).save_pretrained(tmp_path / "ddpm", safe_serialization=True)
    pixel = pipelines.load_pipeline(tmp_path / "ddpm", device="cpu")
    assert pixel.kind == "pixel" and pixel.codec is None and pixel.bind(n=3) is pixel.model
    vq = VQModel(in_channels=1, out_channels=1, latent_channels=2, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                 norm_num_groups=16, num_vq_embeddings=32, sample_size=8)
    unet = UNet2DModel(**small_unet_config(sample_size=4, channels=2, block_out_channels=(8, 16)))
    LDMPipeline(vqvae=vq, unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ldm", safe_serialization=True)
    latent = pipelines.load_pipeline(tmp_path / "ldm", device="cpu")
    assert latent.kind == "latent" and latent.image_shape == (1, 8, 8) and latent.model.sample_shape == (2, 4, 4)
    with torch.no_grad():
        expected = vq.encode(digits[:3]).latents * vq.config.scaling_factor  # as LDMPipeline divides before decoding
    torch.testing.assert_close(latent.encode(digits[:3]), expected, rtol=1e-5, atol=1e-6)
    assert np.isfinite(sima.score(latent.bind(n=3), latent.encode(digits[:3]))).all()
    with pytest.raises(ValueError, match="no posterior to sample"):
        latent.encode(digits[:3], mode="sample")
