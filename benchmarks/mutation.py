"""Mutation testing of the core maths with mutmut, one module at a time against the fast tests that cover it.

mutmut 3 reads one configuration (pyproject's [tool.mutmut]) and keeps one set of results per working directory,
so each module gets its own directory, mutants/<module>/, holding a generated pyproject.toml (the project's
pytest settings plus this module's `only_mutate` and test selection), a mirror of src/ whose files are symlinks
to the real ones (the bundled weights are linked, not copied), and links to tests/, docs/ and benchmarks/.
mutmut runs there with one worker (`--max-children 1`, OMP_NUM_THREADS=1), so results are cached per module and
a re-run only re-tests the functions that changed.

Score per module = killed / (mutants − equivalent), where killed counts timeouts and "no tests" counts as
survived. Equivalent mutants (no test can tell them apart from the original) are listed in EQUIVALENT with a
one-line reason; lines that only build error messages or progress-bar text are not mutated
(DO_NOT_MUTATE_PATTERNS). Results go to docs/mutation.json and to the table in docs/testing.md.

Usage:
    python benchmarks/mutation.py                      # every module (make mutation; hours on 2 cores)
    python benchmarks/mutation.py --modules budget aggregates
    python benchmarks/mutation.py --quick              # one small module, < 1 minute (run by the test suite)
    python benchmarks/mutation.py --survivors budget   # diffs of the surviving mutants of a module
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/rewardsteer"
MIN_SCORE = 0.85

# module -> (test files that cover it, mutant-name globs to restrict to or None for every function). mutmut runs a
# mutant against only the tests that executed its function, so whole files cost little; slow tests that only
# exercise the plumbing (CLI, benchmarks) are left out.
REFERENCE = ["tests/test_reference.py", "tests/test_method_contracts.py"]  # formulas, and the contracts around them
METHODS_TESTS = ["tests/test_methods.py", *REFERENCE, "tests/test_properties.py"]
SMC_TESTS = ["tests/test_smc_methods.py", "tests/test_smc_toy.py", *REFERENCE, "tests/test_discrete.py",
             "tests/test_properties.py", "-k", "not test_cli and not benchmark"]
MODULES: dict[str, tuple[list[str], list[str] | None]] = {
    "budget": (["tests/test_properties.py"], None),
    "aggregates": (["tests/test_ensemble.py", "tests/test_properties.py", "-k", "not test_cli"], None),
    "rewards": (["tests/test_ensemble.py", *REFERENCE, "tests/test_reward_contracts.py", "-k",
                 "not test_cli"], None),
    "stacked": (["tests/test_stacked.py", "tests/test_ensemble.py", "-k", "not test_cli"], None),
    "methods/common": (METHODS_TESTS, None),
    "methods/best_of_n": (METHODS_TESTS, None),
    "methods/reno": (METHODS_TESTS, None),
    "methods/search": (METHODS_TESTS, None),
    "smc/core": (["tests/test_smc_core.py", "tests/test_properties.py"], None),
    "smc/driver": (SMC_TESTS, None),
    "smc/fk": (SMC_TESTS, None),
    "smc/das": (SMC_TESTS, None),
    "smc/svdd": (SMC_TESTS, None),
    "smc/guidance": (SMC_TESTS[:-2] + ["tests/test_api_polish.py::test_reward_guidance_moves_samples_up_a_linear_reward",
                                        "tests/test_api_polish.py::test_reward_guidance_refuses_what_it_cannot_do",
                                        *SMC_TESTS[-2:]], None),
    "masked": (["tests/test_discrete.py", *REFERENCE], None),
    "molecules/rewards": (["tests/test_molecules.py", *REFERENCE, "tests/test_molecule_reward_contracts.py"],
                          None),
    "flow": (["tests/test_sampler.py", *REFERENCE,
              "tests/test_bundled_models.py::test_mixture_prior_is_differentiable_and_uniform_over_classes"],
             ["rewardsteer.flow.x_mixture_weights*", "rewardsteer.flow.x_split_code*", "rewardsteer.flow.x_class_labels*",
              "rewardsteer.flow.xǁFlowSamplerǁvelocity*", "rewardsteer.flow.xǁFlowSamplerǁpredict_x0*",
              "rewardsteer.flow.xǁFlowSamplerǁtransition*"]),
    "hf/rewards": (["tests/test_hf_rewards.py"], None),
    "hf/sampler": (["tests/test_hf_sampler_contracts.py", "tests/test_hf.py", "tests/test_hf_flow.py", "-k",
                    "contracts or sampler or step or transition or euler or generator_matches or marginals or "
                    "gradients or packing or reload or unsupported"], None),
}
# the order of a full run: the examples first (each module's results are written as it finishes)
ORDER = ["smc/das", "smc/fk", "aggregates", "smc/core", "budget", "methods/reno", "methods/search", "smc/svdd",
         "flow", "smc/guidance", "molecules/rewards", "masked", "rewards", "methods/common", "methods/best_of_n",
         "smc/driver", "hf/rewards", "hf/sampler", "stacked"]
assert sorted(ORDER) == sorted(MODULES)
# --quick: the Meter's fitting of work into a budget against its property tests, in its own working directory
# (22 mutants, about 40 s)
QUICK = ("budget", ["tests/test_properties.py", "-k", "meter"], ["rewardsteer.budget.xǁMeterǁunits_that_fit*"])

# Lines that only build messages or progress-bar text: mutating their strings tests the wording, not the maths.
DO_NOT_MUTATE_PATTERNS = [
    r"raise \w+\(",
    r"^\s*f?\"[^\"]*\"[)\s,]*$",  # a message's continuation line
    r"^\s*f?\"[^\"]*\"\s*f?\"",
    r"warnings\.warn\(",
    r"bar\.set_postfix|bar\.update|tqdm\(",
]

# mutant -> why no test can kill it (the mutant computes the same thing as the original). "On CPU": the mutant drops
# or changes only a device argument, which a run on the CPU (the test machines have no GPU) cannot tell apart.
_DIM = "log-weights are always (B, K), so dim +1 is dim -1"
_CPU = "on CPU: only the device argument changes"
_CORE = "rewardsteer.smc.core."
_RENO = "rewardsteer.methods.reno.x_reno__mutmut_"
_DRV = "rewardsteer.smc.driver."
_MOL = "rewardsteer.molecules.rewards."
_HFR = "rewardsteer.hf.rewards."
_DECODER = "the vocabulary is only read to build a decoder, and one is given"
_ONE_DRAW = ("a single draw from the weights has the same law under every scheme (multinomial, or the inverse CDF of "
             "one uniform), and the first of two draws has it too")
_MS, _UT = "rewardsteer.masked.xǁMaskedDiffusionSamplerǁ", "rewardsteer.masked.xǁUnmaskTransitionǁ"
_ST, _HFS = "rewardsteer.stacked.", "rewardsteer.hf.sampler."
_SV = "rewardsteer.smc.svdd.x_svdd__mutmut_"
_TWIN = "members in one stack share a signature (class, every submodule's settings, tensor shapes): any member reads the same"
_IN_PLACE = "the in-place ReLU only saves one tensor: the values are the same"
EQUIVALENT: dict[str, str] = {
    "rewardsteer.masked.xǁMaskedDiffusionSamplerǁsample__mutmut_27": "a deterministic step ignores the noise: drawing it "
        "only advances the generator (the same law; another seed's sample)",
    "rewardsteer.masked.xǁMaskedDiffusionSamplerǁsample_noise__mutmut_2": "the initial state is all [mask] tokens: "
                                                                          "no draw reads the generator",
    **{f"rewardsteer.rewards.xǁClassifierRewardǁ_targets__mutmut_{i}": "an int target is int64 already" for i in (9, 12)},
    "rewardsteer.methods.best_of_n.x_best_of_n__mutmut_65": "need_grad=None is falsy like False",
    "rewardsteer.methods.best_of_n.x_random_search__mutmut_102": "need_grad=None is falsy like False",
    _HFR + "xǁCLIPFeaturesǁimages__mutmut_4": "CLIP's patch embedding casts pixel_values to its own dtype (bf16 tested)",
    **{f"{_DRV}x_evaluate__mutmut_{i}": "nan_to_num's default already turns NaN into 0" for i in (72, 76)},
    _DRV + "x_evaluate__mutmut_57": "with no finite reward the gradient of the empty sum is 0, which the fallback gives",
    **{f"{_DRV}x_evaluate__mutmut_{i}": "r and members are read only on scored steps, where they are replaced"
       for i in (88, 90, 91)},
    _DRV + "x_run_particles__mutmut_170": "a dead particle's log-weight is −inf, and adding finite increments keeps it −inf",
    _DRV + "x_run_particles__mutmut_381": "guidance never reweights: its ESS is always K, so maybe_resample never fires",
    _HFR + "x_clip_preprocess__mutmut_2": "images are (B, 3, H, W): shape[+2:] is shape[-2:]",
    **{_HFR + f"x_clip_preprocess__mutmut_{i}": "align_corners=None is bicubic's default, False" for i in (27, 32)},
    **{_HFR + f"x_clip_preprocess__mutmut_{i}": "a (3, 1, 1) view broadcasts over (B, 3, H, W) like (1, 3, 1, 1)"
       for i in (54, 67)},
    **{_HFR + f"xǁCLIPFeaturesǁ_embed__mutmut_{i}": "features are (B, D): dim 1 is dim -1" for i in (4, 7)},
    _HFR + "xǁMLPHeadǁforward__mutmut_12": "the head's output is (B, 1): squeeze(1) is squeeze(-1)",
    _HFR + "xǁCLIPHeadǁscore__mutmut_8": _CPU,
    **{_SV + str(i): _CPU for i in (76, 78, 86, 88, 93, 97, 113)},
    **{_SV + str(i): _ONE_DRAW for i in (263, 269, 270, 271)},
    _SV + "52": "need_grad=None is falsy like False",
    **{_SV + str(i): "scored=None is falsy like False" for i in (132, 171)},
    **{_SV + str(i): "evaluate reads the reward only on scored steps" for i in (126, 165)},
    _SV + "119": "st.x0 is assigned before it is first read",
    _SV + "98": "the selection stream is still seeded by a draw from the run's generator, from 124 values instead of "
                "2^62: only collisions between different runs become likelier, which no single run shows",
    **{f"rewardsteer.methods.search.{n}": _CPU for n in ("x_sphere_neighbours__mutmut_19", "x_sphere_neighbours__mutmut_22",
                                                        "x_zero_order_search__mutmut_88", "x_zero_order_search__mutmut_89")},
    "rewardsteer.methods.search.x_sphere_neighbours__mutmut_16": "the direction stays float32 until the result is cast "
                                                                 "to the pivot's dtype: precision only",
    "rewardsteer.methods.search.x_sphere_neighbours__mutmut_53": "u is a symmetric random direction orthogonal to the "
                                                                 "pivot: −u has the same law",
    "rewardsteer.methods.search.x_zero_order_search__mutmut_73": "need_grad=None is falsy like False",
    **{_HFS + n: _CPU for n in ("xǁLatentSamplerǁsample_noise__mutmut_4", "x__build__mutmut_20", "x__build__mutmut_22",
                                "x__build__mutmut_89")},
    _HFS + "x__build__mutmut_17": "pipe.to(device=None, dtype=None) changes nothing, and on CPU neither does a move to 'cpu'",
    _HFS + "x_path_coefficients__mutmut_6": "set_timesteps rebinds the scheduler's attributes, so a shallow copy also leaves "
                                            "the pipeline's scheduler as it was (checked for all five schedulers)",
    **{_HFS + f"x_path_coefficients__mutmut_{i}": "the scheduler's sigmas have exactly steps + 1 entries" for i in (39, 51)},
    _HFS + "xǁLatentSamplerǁ__init____mutmut_14": "persistent=None is falsy like False: the buffer stays out of state_dict",
    **{_HFS + f"xǁLatentSamplerǁ__init____mutmut_{i}": "every scheduler with clip_sample (DDIM, DDPM) has "
       "clip_sample_range in its config: the default is never read" for i in (34, 36, 39)},
    _HFS + "xǁLatentSamplerǁdecode__mutmut_11": "AutoencoderKL's config always has shift_factor (None when unused)",
    **{_HFS + f"xǁDiffusersSamplerǁdenoise__mutmut_{i}": "the UNet reads only text_embeds and time_ids from "
       "added_cond_kwargs, and nothing from it without an addition embedding" for i in (3, 4, 7)},
    **{_HFS + f"xǁUnrolledDiffusersǁforward__mutmut_{i}": "the prompt is fixed when the sampler is built: its steps "
       "ignore cond" for i in (2, 4)},
    _HFS + "x_enable_checkpointing__mutmut_3": "None is falsy like False",
    _HFS + "x_diffusers_sampler__mutmut_7": "one_step=None is falsy like False",
    _HFS + "x__build__mutmut_121": "without CFG only the last row of time_ids is read, and both rows are equal",
    _HFS + "x__build__mutmut_152": "without CFG encode_prompt returns no negative embeddings (None)",
    **{_ST + n: _TWIN for n in ("x__conv__mutmut_2", "x__layer__mutmut_2", "x__vmapped__mutmut_9", "x__wide_network__mutmut_3",
                                "x_scores_with_stacks__mutmut_15", "xǁStackedNetsǁ__init____mutmut_12")},
    **{_ST + n: _IN_PLACE for n in ("x__step__mutmut_26", "x__step__mutmut_31", "x__layer__mutmut_24")},
    **{_ST + n: "vars() of one class's instances list their attributes in one order (set by __init__)"
       for n in ("x__signature__mutmut_5", "x__signature__mutmut_8", "x__signature__mutmut_14")},
    _ST + "x__signature__mutmut_18": _CPU,
    _ST + "x__conv__mutmut_30": "only an ill-formed net (a convolution of a flattened value) reaches it: it raises either way",
    _ST + "x__conv__mutmut_41": "the input is 4-D here: shape[+2:] is shape[-2:]",
    _ST + "x__linear__mutmut_40": "a _Channels value is always 4-D: `or dim == 3` adds no case",
    _ST + "x__vmapped__mutmut_6": "the shell keeps a real copy of the weights: more memory, the same values",
    _ST + "xǁStackedNetsǁ_wide_in_chunks__mutmut_11": _CPU,
    **{_ST + f"xǁStackedNetsǁ_wide_in_chunks__mutmut_{i}": "a batch that fits one chunk splits into one part: the same "
       "call and values, one extra copy" for i in (7, 9)},
    **{_CORE + n: _DIM for n in ("x_ess__mutmut_7", "x_normalize__mutmut_6", "x_normalize__mutmut_16",
                                 "x_resample__mutmut_44", "xǁWeightsǁ_fold_epoch__mutmut_4")},
    **{_CORE + n: _CPU for n in ("x_resample__mutmut_24", "x_resample__mutmut_27", "x_resample__mutmut_31",
                                 "x_resample__mutmut_37", "x_resample__mutmut_40", "x_take__mutmut_2", "x_take__mutmut_4",
                                 "x_take__mutmut_6", "xǁWeightsǁ__init____mutmut_6", "xǁWeightsǁ__init____mutmut_10",
                                 "xǁWeightsǁ__init____mutmut_14", "xǁWeightsǁ__init____mutmut_17",
                                 "xǁWeightsǁmaybe_resample__mutmut_12", "xǁWeightsǁmaybe_resample__mutmut_14",
                                 "xǁWeightsǁmaybe_resample__mutmut_23")},
    _CORE + "xǁWeightsǁadd__mutmut_2": "on CPU: .to(None) keeps the increment's dtype, and adding it to the float64 "
                                       "log-weights promotes it exactly as .to(logw) did",
    _CORE + "x_resample__mutmut_38": "torch.arange's default int64 steps are the same numbers once added to the float u",
    _CORE + "x_resample__mutmut_41": "torch.arange's default int64 steps are the same numbers once added to the float u",
    _CORE + "x_resample__mutmut_52": "searchsorted left vs right differs only when a uniform equals a CDF value exactly",
    _CORE + "x_resample__mutmut_53": "searchsorted left vs right differs only when a uniform equals a CDF value exactly",
    _CORE + "xǁWeightsǁadd__mutmut_22": "the inner where's value for a bad entry is discarded by the outer where",
    _CORE + "xǁWeightsǁmaybe_resample__mutmut_9": "keep (K,) broadcasts against the (B, K) ancestors as keep (B, K) did",
    **{f"rewardsteer.aggregates.{n}": "_per_member never reads its `scores` argument"
       for n in ("x_standardize__mutmut_7", "x_log_sigmoid__mutmut_12", "x_weighted__mutmut_10")},
    **{f"rewardsteer.rewards.xǁClassifierRewardǁ_targets__mutmut_{i}": _CPU for i in (8, 11)},
    **{_RENO + str(i): _CPU for i in (130,)},
    **{_RENO + str(i): "the loop's last pass (it == iters) always returns, so what follows it is never reached"
       for i in (134, 306, 307)},
    **{_RENO + str(i): "the previous pass's look-ahead (check_budget before the first) already guarantees that this "
       "evaluation's NFE and reward calls fit; the check is there for a seconds budget, which the mutant still checks"
       for i in (154, 155, 156)},
    **{_RENO + str(i): "unreachable fallback: the look-ahead that ended the run names a bound that the evaluation "
       "since has only come closer to" for i in (304, 305)},
    **{_RENO + str(i): "zero_grad(set_to_none=False) zeroes the gradient in place; backward then writes the same "
       "values" for i in (212, 213)},
    _RENO + "267": "the progress bar's count only",
    **{f"rewardsteer.methods.best_of_n.x_best_of_n__mutmut_{i}": _CPU for i in (80, 81)},
    **{f"rewardsteer.methods.best_of_n.x_best_of_n__mutmut_{i}": "reached only when no candidate fits, so any unit "
       "cost names the same exhausted bound and the fallback string is never used" for i in (107, 108, 109)},
    **{f"rewardsteer.methods.best_of_n.x_best_of_n__mutmut_{i}": "slice(None, k) and slice(k) are slice(0, k)"
       for i in (130, 132)},
    **{f"rewardsteer.flow.{n}": _CPU for n in (
        "x_class_labels__mutmut_4", "x_class_labels__mutmut_8", "x_class_labels__mutmut_12",
        "x_class_labels__mutmut_15", "x_mixture_weights__mutmut_6", "x_mixture_weights__mutmut_8",
        "xǁFlowSamplerǁvelocity__mutmut_18", "xǁFlowSamplerǁvelocity__mutmut_32", "xǁFlowSamplerǁvelocity__mutmut_46")},
    **{f"rewardsteer.flow.x_class_labels__mutmut_{i}": "torch.full with an int fill value is int64 already"
       for i in (5, 9)},
    "rewardsteer.flow.xǁFlowSamplerǁvelocity__mutmut_51": "torch.cat promotes the int64 one-hot to the float weights",
    "rewardsteer.flow.xǁFlowSamplerǁvelocity__mutmut_55": "one_hot's default width is max + 1 = 11 = y.shape[1]: "
                                                         "the null class is the largest label",
    **{f"{_MS}sample__mutmut_{i}": "the masked denoiser takes neither time nor condition: predict_x0 ignores both"
       for i in (11, 12, 14, 15, 16, 43, 44, 46, 47, 48, 49)},
    _MS + "sample__mutmut_5": "initial_state ignores its generator: the start is all [mask]",
    **{f"{_MS}initial_state__mutmut_{i}": "torch.full with an int fill value is int64 already" for i in (10, 14)},
    **{f"{_MS}initial_state__mutmut_{i}": _CPU for i in (11, 15)},
    **{f"{_UT}draw_noise__mutmut_{i}": _CPU for i in (1, 4, 8)},
    **{f"{_UT}log_prob__mutmut_{i}": _CPU for i in (39, 42)},
    _UT + "log_prob__mutmut_77": "the log-probabilities are (N, L): dim +1 is dim -1",
    **{f"{_UT}sample__mutmut_{i}": "u < 1 already (noise < 1, stay >= 0): the upper clamp never binds"
       for i in (5, 7, 13, 14)},
    _UT + "sample__mutmut_4": "a negative u belongs to a position that stays masked, whose drawn token is discarded",
    _UT + "sample__mutmut_28": "x̂0's log-probabilities are normalized: cdf[..., -1] = 1, so u·cdf[-1] = u/cdf[-1]",
    _UT + "sample__mutmut_35": "u·cdf[-1] < cdf[-1], so searchsorted never returns V: a larger clamp never binds",
    _UT + "sample__mutmut_41": "noise >= stay and noise > stay differ only when a uniform equals stay exactly",
    **{f"{_DRV}x_run_particles__mutmut_{i}": _CPU for i in (92, 94, 108, 110, 115, 119, 135, 138, 158, 162, 390, 393)},
    _DRV + "x_run_particles__mutmut_120": "any seed drawn from the run's generator seeds the resampling stream alike",
    **{f"{_DRV}x_run_particles__mutmut_{i}": "the held-out judges see each slot's best: with no weights passed, any "
       "pick is the argmax" for i in (199, 205, 206)},
    _DRV + "x_run_particles__mutmut_200": "the argmax pick never reads the generator",
    **{f"{_DRV}x_run_particles__mutmut_{i}": "the mask only enters the trace as a mean: a float mask has the same one"
       for i in (389, 392)},
    _DRV + "x_run_particles__mutmut_598": "getattr's default None and False are both falsy",
    **{f"{_DRV}x_pick_per_slot__mutmut_{i}": _ONE_DRAW for i in (22, 28, 29, 30)},
    **{f"{_MOL}x_gold_monitors__mutmut_{i}": _DECODER for i in (9, 14)},
    **{f"{_MOL}x_reward__mutmut_{i}": _DECODER for i in (29, 35)},
    **{f"{_MOL}x_reward__mutmut_{i}": "an oracle given no decoder makes its own from the same vocabulary: the same "
       "scores (the shared memo only saves time)" for i in (36, 39)},
    _MOL + "xǁMoleculeDecoderǁ__call____mutmut_11": "popitem(last=None) is popitem(last=False): None is falsy",
    _MOL + "xǁMoleculeDecoderǁ__init____mutmut_1": "a memo one entry larger: the same molecules",
    **{f"{_MOL}xǁOracleRewardǁscore__mutmut_{i}": "a list of Python floats becomes float32 by default"
       for i in (13, 16)},
    **{f"{_MOL}{n}": _CPU for n in ("xǁOracleRewardǁscore__mutmut_14", "xǁOracleRewardǁscore__mutmut_17",
                                    "xǁValidityǁscore__mutmut_2", "xǁValidityǁscore__mutmut_4")},
    _HFR + "x__features__mutmut_1": "this transformers returns an output object from get_image_features, never a "
                                    "bare tensor, so the tensor branch is not taken here",
    **{f"{_HFR}xǁCLIPFeaturesǁ_embed__mutmut_{i}": "the embeddings are (B, D): normalize's default dim 1 and dim +1 "
       "are dim -1" for i in (4, 7)},
    _HFR + "xǁCLIPScoreǁscore__mutmut_12": "the products are (B, D): dim +1 is dim -1",
    **{f"{_HFR}{n}": _CPU for n in ("xǁCLIPFeaturesǁimages__mutmut_13", "xǁCLIPFeaturesǁimages__mutmut_15",
                                    "xǁCLIPFeaturesǁimages__mutmut_16", "xǁCLIPFeaturesǁload__mutmut_5",
                                    "xǁCLIPFeaturesǁload__mutmut_8", "xǁCLIPHeadǁscore__mutmut_6",
                                    "xǁCLIPScoreǁscore__mutmut_6")},
    _HFR + "xǁCLIPFeaturesǁimages__mutmut_14": "float64 images are preprocessed in float64 instead of float32, then "
                                               "cast to the model's dtype: the same pixels to rounding",
    "rewardsteer.methods.common.x_trace_entry__mutmut_5": "the mean of an empty tensor is NaN already, silently",
    **{f"rewardsteer.methods.common.x_trace_entry__mutmut_{i}": 'float("NAN") is float("nan"): float() ignores case'
       for i in (9, 20)},
    **{f"rewardsteer.smc.das.x_das__mutmut_{i}": "getattr's default is never used: the checked sampler is a Sampler, "
       "whose class sets `continuous`" for i in (23, 26, 29)},
    **{f"rewardsteer.smc.guidance.x_reward_guidance__mutmut_{i}": "getattr's default is never used: the checked "
       "sampler is a Sampler, whose class sets `continuous`" for i in (17, 20, 23)},
    "rewardsteer.smc.guidance.x_reward_guidance__mutmut_35": 'float("INF") is float("inf"): float() ignores case',
}


def module_path(module: str) -> str:
    return f"{PKG}/{module}.py"


def mutant_prefix(module: str) -> str:
    return "rewardsteer." + module.replace("/", ".")


def job(module: str, quick: bool = False) -> tuple[str, list[str], list[str] | None]:
    """(working directory name, test selection, mutant globs) of a module's run."""
    if quick:
        return "quick-" + QUICK[0], QUICK[1], QUICK[2]
    tests, only = MODULES[module]
    return module.replace("/", "-"), tests, only


def pyproject(module: str, quick: bool = False) -> str:
    """The project's pytest settings plus this module's [tool.mutmut]."""
    import tomllib

    pytest_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    _, tests, _ = job(module, quick)
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in pytest_cfg.items() if k != "addopts"]
    lines += ['addopts = "-p no:cacheprovider"', "", "[tool.mutmut]", 'source_paths = ["src"]',
              f"only_mutate = {json.dumps([module_path(module)])}",
              f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
              f"do_not_mutate_patterns = {json.dumps(DO_NOT_MUTATE_PATTERNS)}",
              'process_isolation = "forkserver"', "use_git_change_detection = false", ""]
    return "\n".join(lines)


def workdir(module: str, base: Path, quick: bool = False) -> Path:
    """mutants/<module>/ with its config, a symlinked mirror of src/ and links to tests/, docs/, benchmarks/."""
    work = base / job(module, quick)[0]
    work.mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text(pyproject(module, quick))
    for root, dirs, files in os.walk(ROOT / "src"):
        rel = Path(root).relative_to(ROOT)
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "weights") and not d.endswith(".egg-info")]
        (work / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = work / rel / f
            if not link.is_symlink():
                link.symlink_to(Path(root) / f)
    links = {work / "tests": ROOT / "tests"}
    for name in ("docs", "benchmarks"):
        links[work / "mutants" / name] = ROOT / name
    links[work / "mutants" / PKG / "weights"] = ROOT / PKG / "weights"  # read by bundled-model tests, never copied
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    return work


def mutmut_bin() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run_module(module: str, base: Path, log, quick: bool = False, retest: bool = False) -> dict:
    work = workdir(module, base, quick)
    _, _, only = job(module, quick)
    if retest:  # mutmut re-maps tests to functions only for new tests: re-map all, edited tests included
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    if retest and (work / "mutants" / (module_path(module) + ".meta")).exists():
        # first the mutants of functions edited since (mutmut re-runs only those), then last time's survivors
        run_mutmut(work, only, log)
        last = score(module, work, 0.0, quick)
        survived = last["survived"] + last["equivalent_names"]  # equivalents too: one that is killed is not one
        if not survived:
            return score(module, work, 0.0, quick)
        only = survived
    start = time.time()
    run_mutmut(work, only, log)
    return score(module, work, time.time() - start, quick)


def run_mutmut(work: Path, names: list[str] | None, log) -> None:
    """`mutmut run` in a module's working directory, one worker, on `names` (globs) or every pending mutant."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([mutmut_bin(), "run", "--max-children", "1", *(names or [])], cwd=work, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(proc.stdout)
    if proc.returncode != 0:
        lines = [x for x in proc.stdout.replace("\r", "\n").splitlines() if x.strip() and x.strip()[0] not in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"]
        raise SystemExit(f"mutmut failed in {work.name} (exit {proc.returncode}); last output:\n" + "\n".join(lines[-40:]))


def statuses(module: str, work: Path, quick: bool = False) -> dict[str, str]:
    """mutant name -> mutmut's status, for the mutants of `module` (restricted to its globs)."""
    from fnmatch import fnmatch

    from mutmut.stats import status_by_exit_code

    meta = json.loads((work / "mutants" / (module_path(module) + ".meta")).read_text())
    _, _, only = job(module, quick)
    out = {}
    for name, code in meta["exit_code_by_key"].items():
        if only and not any(fnmatch(name, g) for g in only):
            continue
        out[name] = status_by_exit_code[code]
    return out


def score(module: str, work: Path, seconds: float, quick: bool = False) -> dict:
    st = statuses(module, work, quick)
    equivalent = sorted(n for n in st if n in EQUIVALENT)
    wrongly = [n for n in equivalent if st[n] in ("killed", "timeout")]
    if wrongly:
        raise SystemExit(f"listed as equivalent but killed (remove them from EQUIVALENT): {wrongly}")
    killed = sorted(n for n, s in st.items() if s in ("killed", "timeout"))
    unchecked = sorted(n for n, s in st.items() if s == "not checked")
    survived = sorted(n for n, s in st.items() if n not in EQUIVALENT and s not in ("killed", "timeout"))
    considered = len(st) - len(equivalent)
    return {"module": module_path(module), "mutants": len(st), "equivalent": len(equivalent), "equivalent_names": equivalent,
            "killed": len(killed),
            "survived": survived, "not_checked": unchecked,
            "score": round(len(killed) / considered, 4) if considered else 1.0, "seconds": round(seconds, 1),
            "tests": job(module, quick)[1]}


def show(module: str, base: Path, names: list[str]) -> str:
    work = base / module.replace("/", "-")
    out = []
    for name in names:
        proc = subprocess.run([mutmut_bin(), "show", name], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        out.append(proc.stdout)
    return "\n".join(out)


def table(results: dict) -> str:
    rows = ["| module | mutants | equivalent | killed | score | tests |", "|---|---|---|---|---|---|"]
    for r in results.values():
        tests = " ".join(t.removeprefix("tests/") for t in r["tests"])
        rows.append(f"| `{r['module'].removeprefix('src/')}` | {r['mutants']} | {r['equivalent']} | {r['killed']} | "
                    f"{100 * r['score']:.1f}% | `{tests}` |")
    return "\n".join(rows)


def write_docs(results: dict, doc: Path) -> None:
    """Replace the generated block of docs/testing.md with the table and the equivalent mutants."""
    eq = "\n".join(f"- `{name}`: {why}" for name, why in sorted(EQUIVALENT.items())) or "- none"
    block = (f"<!-- mutation:begin (written by benchmarks/mutation.py) -->\n{table(results)}\n\n"
             f"Equivalent mutants (excluded from the score):\n\n{eq}\n<!-- mutation:end -->")
    text = doc.read_text() if doc.exists() else ""
    if "<!-- mutation:begin" in text:
        text = re.sub(r"<!-- mutation:begin.*?<!-- mutation:end -->", lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    doc.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", nargs="*", choices=list(MODULES), help="default: all")
    p.add_argument("--quick", action="store_true", help=f"only part of {QUICK[0]}; results under --base, docs untouched")
    p.add_argument("--base", type=Path, default=ROOT / "mutants", help="working directories (default ./mutants)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "mutation.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "testing.md")
    p.add_argument("--survivors", metavar="MODULE", choices=list(MODULES), help="print surviving mutants' diffs")
    p.add_argument("--fresh", action="store_true", help="delete cached results of the chosen modules first")
    p.add_argument("--retest", action="store_true", help="re-run the mutants that survived last time (after new tests)")
    p.add_argument("--rescore", action="store_true", help="recompute the scores from the cached results, run nothing")
    a = p.parse_args(argv)
    if a.survivors:
        r = score(a.survivors, a.base / a.survivors.replace("/", "-"), 0.0)
        print(show(a.survivors, a.base, r["survived"]))
        return 0
    modules = [QUICK[0]] if a.quick else (a.modules or ORDER)
    results = {} if a.quick or not a.out.exists() else json.loads(a.out.read_text())
    a.base.mkdir(parents=True, exist_ok=True)
    failed = []
    with open(a.base / "mutation.log", "a") as log:
        for module in modules:
            if a.fresh:
                shutil.rmtree(a.base / job(module, a.quick)[0], ignore_errors=True)
            try:
                if a.rescore:  # its seconds are the cached run's, added below
                    r = score(module, a.base / job(module, a.quick)[0], 0.0, a.quick)
                else:
                    r = run_module(module, a.base, log, a.quick, retest=a.retest)
            except SystemExit as e:  # one module's failure (e.g. its clean test run) does not stop the others
                print(e, flush=True)
                failed.append(module)
                continue
            if a.retest or a.rescore:  # the time of the run that produced the cached results, plus this one
                r["seconds"] = round(results.get(module, {}).get("seconds", 0.0) + (0.0 if a.rescore else r["seconds"]), 1)
            results[module] = r
            print(f"{r['module']}: {r['killed']}/{r['mutants'] - r['equivalent']} killed = {100 * r['score']:.1f}% "
                  f"({r['equivalent']} equivalent, {r['seconds']:.0f} s)", flush=True)
            if r["score"] < MIN_SCORE:
                failed.append(module)
            if not a.quick:  # merged into the file as it is now: two runs on different modules may share it
                current = json.loads(a.out.read_text()) if a.out.exists() else {}
                results = {**current, module: r}
                a.out.write_text(json.dumps(results, indent=1) + "\n")
    if not a.quick:
        results = json.loads(a.out.read_text()) if a.out.exists() else results
        write_docs({m: results[m] for m in MODULES if m in results}, a.doc)
    if failed:
        print(f"below {MIN_SCORE:.0%}: {', '.join(failed)} (python benchmarks/mutation.py --survivors MODULE)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
