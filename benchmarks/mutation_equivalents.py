"""The equivalent mutants of `make mutation` (benchmarks/mutation.py): mutants no test can tell apart from the
original, each with the one-line reason docs/testing.md prints. A name listed here that a run kills is an error."""

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
_MS, _UT = "rewardsteer.bundled.masked.xǁMaskedDiffusionSamplerǁ", "rewardsteer.bundled.masked.xǁUnmaskTransitionǁ"
_ST, _HFS, _HFP = "rewardsteer.rewards.stacked.", "rewardsteer.hf.sampler.", "rewardsteer.hf.pipelines."
_SV = "rewardsteer.smc.svdd.x_svdd__mutmut_"
_TWIN = "members in one stack share a signature (class, every submodule's settings, tensor shapes): any member reads the same"
_IN_PLACE = "the in-place ReLU only saves one tensor: the values are the same"
EQUIVALENT: dict[str, str] = {
    "rewardsteer.bundled.masked.xǁMaskedDiffusionSamplerǁsample__mutmut_27": "a deterministic step ignores the noise: drawing it "
        "only advances the generator (the same law; another seed's sample)",
    "rewardsteer.bundled.masked.xǁMaskedDiffusionSamplerǁsample_noise__mutmut_2": "the initial state is all [mask] tokens: "
                                                                          "no draw reads the generator",
    **{f"rewardsteer.rewards.base.xǁClassifierRewardǁ_targets__mutmut_{i}": "an int target is int64 already" for i in (9, 12)},
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
    **{(_HFP if n.startswith("x__build") else _HFS) + n: _CPU
       for n in ("xǁLatentSamplerǁsample_noise__mutmut_4", "x__build__mutmut_20", "x__build__mutmut_22",
                                "x__build__mutmut_89")},
    _HFP + "x__build__mutmut_17": "pipe.to(device=None, dtype=None) changes nothing, and on CPU neither does a move to 'cpu'",
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
    _HFP + "x_diffusers_sampler__mutmut_7": "one_step=None is falsy like False",
    _HFP + "x__build__mutmut_121": "without CFG only the last row of time_ids is read, and both rows are equal",
    _HFP + "x__build__mutmut_152": "without CFG encode_prompt returns no negative embeddings (None)",
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
    **{f"rewardsteer.rewards.aggregates.{n}": "_per_member never reads its `scores` argument"
       for n in ("x_standardize__mutmut_7", "x_log_sigmoid__mutmut_12", "x_weighted__mutmut_10")},
    **{f"rewardsteer.rewards.base.xǁClassifierRewardǁ_targets__mutmut_{i}": _CPU for i in (8, 11)},
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
    **{f"rewardsteer.bundled.flow.{n}": _CPU for n in (
        "x_class_labels__mutmut_4", "x_class_labels__mutmut_8", "x_class_labels__mutmut_12",
        "x_class_labels__mutmut_15", "x_mixture_weights__mutmut_6", "x_mixture_weights__mutmut_8",
        "xǁFlowSamplerǁvelocity__mutmut_18", "xǁFlowSamplerǁvelocity__mutmut_32", "xǁFlowSamplerǁvelocity__mutmut_46")},
    **{f"rewardsteer.bundled.flow.x_class_labels__mutmut_{i}": "torch.full with an int fill value is int64 already"
       for i in (5, 9)},
    "rewardsteer.bundled.flow.xǁFlowSamplerǁvelocity__mutmut_51": "torch.cat promotes the int64 one-hot to the float weights",
    "rewardsteer.bundled.flow.xǁFlowSamplerǁvelocity__mutmut_55": "one_hot's default width is max + 1 = 11 = y.shape[1]: "
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
    "rewardsteer.plumbing.x_trace_entry__mutmut_5": "the mean of an empty tensor is NaN already, silently",
    **{f"rewardsteer.plumbing.x_trace_entry__mutmut_{i}": 'float("NAN") is float("nan"): float() ignores case'
       for i in (9, 20)},
    **{f"rewardsteer.smc.das.x_das__mutmut_{i}": "getattr's default is never used: the checked sampler is a Sampler, "
       "whose class sets `continuous`" for i in (23, 26, 29)},
    **{f"rewardsteer.smc.guidance.x_reward_guidance__mutmut_{i}": "getattr's default is never used: the checked "
       "sampler is a Sampler, whose class sets `continuous`" for i in (17, 20, 23)},
    "rewardsteer.smc.guidance.x_reward_guidance__mutmut_35": 'float("INF") is float("inf"): float() ignores case',
}
