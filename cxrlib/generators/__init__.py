"""The study's generators: how they are trained, sampled and written to disk.

=============================== ===================================================================
module                          what it holds
=============================== ===================================================================
:mod:`.training_utils`          what every training loop shares (diffusers' ``training_utils`` is the
                                model): batch order, RNG and resume state, the run folder's options
                                check, CSV logs, training tensors, finished model folders
:mod:`.ddpm`                    the conditional pixel DDPM (Huijben, Khosravi): ``train_generator``
:mod:`.gan`                     the label-conditional GAN (Schaudt's GAN arm): ``train_gan``
:mod:`.latent`                  the latent diffusion model (Rombach; Rajaraman): ``train_latent_diffusion``
:mod:`.latent_sampling`         latent sampling and image-to-image (SDEdit)
:mod:`.sampling`                samplers (DDPM / DDIM / DPM-Solver++), per-image seeds, ``sample_images``
:mod:`.conditions`              condition tables: explicit, at prevalence, balanced, minority, flipped
:mod:`.synthetic_sets`          synthetic sets on disk from any generator, and loading them back
=============================== ===================================================================

Dependencies point one way: ``training_utils`` and ``sampling`` depend on no other generator module;
the three models depend on them; ``synthetic_sets`` depends on the models. Import the submodule you
need (``from cxrlib.generators.ddpm import train_generator``): this package imports none of them.
"""
