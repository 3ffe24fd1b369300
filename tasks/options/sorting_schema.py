"""The sorting options schema: allowed keys and types per step, method and sorter (SpikeInterface 0.105)."""

from __future__ import annotations


def _spec(text: str) -> dict[str, str]:
    """'key:type key:type ...' -> {key: type}. Types: n number, s string, b bool, l list, m mapping,
    a anything; a trailing '?' allows null."""
    return dict(item.split(":", 1) for item in text.split())


# --- Allowed keys, read from SpikeInterface 0.105.3's source; tests/test_options.py checks each one
# against the installed SpikeInterface so that drift across versions fails a test. Keys that the
# pipeline owns (recording, peaks, noise_levels, progress_bar, job kwargs, ...) or that YAML cannot
# express (callables, arrays) are left out on purpose.
PRESETS: tuple[str, ...] = tuple(
    """dredge dredge_fast medicine nonrigid_accurate nonrigid_fast_and_accurate
    rigid_fast kilosort_like""".split()
)
# (detect, localize, estimate) method each preset sets (`motion_options_preset` in preprocessing/motion.py).
PRESET_METHODS: dict[str, tuple[str, ...]] = {
    "dredge": ("locally_exclusive", "monopolar_triangulation", "dredge_ap"),
    "dredge_fast": ("locally_exclusive", "grid_convolution", "dredge_ap"),
    "medicine": ("locally_exclusive", "monopolar_triangulation", "medicine"),
    "nonrigid_accurate": ("locally_exclusive", "monopolar_triangulation", "decentralized"),
    "nonrigid_fast_and_accurate": ("locally_exclusive", "grid_convolution", "decentralized"),
    "rigid_fast": ("locally_exclusive", "center_of_mass", "dredge_ap"),
    "kilosort_like": ("locally_exclusive", "grid_convolution", "iterative_template"),
}
_DETECT = "peak_sign:s detect_threshold:n exclude_sweep_ms:n"
DETECT_KWARGS: dict[str, dict[str, str]] = {  # sortingcomponents/peak_detection: the classes' __init__
    "locally_exclusive": _spec(f"{_DETECT} radius_um:n"),
    "locally_exclusive_torch": _spec(f"{_DETECT} radius_um:n device:s?"),
    "locally_exclusive_cl": _spec(f"{_DETECT} radius_um:n opencl_context_kwargs:m"),
    "matched_filtering": _spec(f"""{_DETECT} radius_um:n prototype:l ms_before:n random_chunk_kwargs:m
        weight_method:m"""),
    "by_channel": _spec(_DETECT),
    "by_channel_torch": _spec(f"{_DETECT} device:s?"),
}
LOCALIZE_KWARGS: dict[str, dict[str, str]] = {  # sortingcomponents/peak_localization: the classes' __init__
    "center_of_mass": _spec("radius_um:n feature:s"),
    "monopolar_triangulation": _spec(
        "radius_um:n max_distance_um:n optimizer:s enforce_decrease:b feature:s"
    ),
    "grid_convolution": _spec("""radius_um:n upsampling_um:n sigma_ms:n margin_um:n prototype:l? percentile:n
        peak_sign:s weight_method:m"""),
}
# estimate_motion()'s own keywords, shared by every method.
ESTIMATE_COMMON = _spec("direction:s rigid:b win_shape:s win_step_um:n win_scale_um:n win_margin_um:n?")
_DREDGE = "max_disp_um:n? time_horizon_s:n? mincorr:n mincorr_percentile:n? mincorr_percentile_nneighbs:n?"
ESTIMATE_KWARGS: dict[str, dict[str, str]] = {  # sortingcomponents/motion: each method's run() / function
    "decentralized": _spec("""bin_um:n hist_margin_um:n bin_s:n histogram_depth_smooth_um:n?
        histogram_time_smooth_s:n? pairwise_displacement_method:s max_displacement_um:n weight_scale:s
        error_sigma:n conv_engine:s? torch_device:s? batch_size:n corr_threshold:n time_horizon_s:n?
        convergence_method:s soft_weights:b normalized_xcorr:b centered_xcorr:b temporal_prior:b
        spatial_prior:b force_spatial_median_continuity:b reference_displacement:s
        reference_displacement_time_s:n robust_regression_sigma:n lsqr_robust_n_iter:n
        weight_with_amplitude:b"""),
    "iterative_template": _spec("""bin_um:n hist_margin_um:n bin_s:n num_amp_bins:n num_shifts_global:n
        num_iterations:n num_shifts_block:n smoothing_sigma:n kriging_sigma:n kriging_p:n kriging_d:n"""),
    "dredge_lfp": _spec(f"{_DREDGE} chunk_len_s:n soft:b thomas_kw:m? xcorr_kw:m? device:s?"),
    "dredge_ap": _spec(f"""{_DREDGE} bin_um:n bin_s:n do_window_weights:b weights_threshold_low:n
        weights_threshold_high:n histogram_depth_smooth_um:n? histogram_time_smooth_s:n? avg_in_bin:b
        thomas_kw:m? xcorr_kw:m? device:s? chunk_len_s:n? batching_mode:s"""),
    "medicine": _spec("""bin_s:n output_dir:s? plot_figures:b motion_bound:n time_kernel_width:n
        activity_network_hidden_features:l amplitude_threshold_quantile:n batch_size:n training_steps:n
        initial_motion_noise:n motion_noise_steps:n optimizer:a learning_rate:n epsilon:n
        num_depth_bins:n?"""),
}
CLEAN_KWARGS = _spec("speed_threshold:n sigma_smooth_s:n?")  # motion/motion_cleaner.py clean_motion_vector
INTERPOLATE_KWARGS = _spec("""border_mode:s spatial_interpolation_method:s sigma_um:n p:n num_closest:n
    interpolation_time_bin_size_s:n? dtype:s?""")  # motion/motion_interpolation.py interpolate_motion
DRIFT_PARAMS = _spec("""preset:s? detect_kwargs:m localize_peaks_kwargs:m estimate_motion_kwargs:m
    clean_motion_kwargs:m interpolate_motion_kwargs:m""")
_FILTER = """margin_ms:a dtype:s? ignore_low_freq_error:b filter_order:n ftype:s filter_mode:s
    add_reflect_padding:b direction:s"""
STEP_PARAMS: dict[str, dict[str, str]] = {  # spikeinterface.preprocessing functions; the chain's steps
    "bandpass_filter": _spec(f"freq_min:n freq_max:n {_FILTER}"),
    "highpass_filter": _spec(f"freq_min:n {_FILTER}"),
    "phase_shift": _spec("margin_ms:n inter_sample_shift:l? dtype:s?"),
    "common_reference": _spec("""reference:s operator:s groups:l? ref_channel_ids:a local_radius:l
        min_local_neighbors:n dtype:s?"""),
    "detect_bad_channels": _spec("""method:s std_mad_threshold:n psd_hf_threshold:n dead_channel_threshold:n
        noisy_channel_threshold:n outside_channel_threshold:n outside_channels_location:s n_neighbors:n
        nyquist_threshold:n direction:s chunk_duration_s:n num_random_chunks:n welch_window_ms:n
        highpass_filter_cutoff:n neighborhood_r2_threshold:n neighborhood_r2_radius_um:n seed:n?
        channel_filters:l?"""),
    "drift_correction": DRIFT_PARAMS,
    # whiten's last five keys go to get_random_data_chunks through **random_chunk_kwargs.
    "whiten": _spec("""dtype:s? apply_mean:b regularize:b regularize_kwargs:m? mode:s radius_um:n int_scale:n?
        eps:n? method:s num_chunks_per_segment:n chunk_duration:a chunk_size:n? seed:n?"""),
    "scale": _spec("gain:n offset:n dtype:s"),
}
ONCE_STEPS = ("drift_correction", "whiten", "scale")
_JOB = "pool_engine:s n_jobs:n chunk_duration:a progress_bar:b mp_context:s? max_threads_per_worker:n"
_TDC = """apply_preprocessing:b preprocessing_dict:m? apply_motion_correction:b motion_correction_preset:s
    clustering_ms_before:n clustering_ms_after:n detection_radius_um:n features_radius_um:n split_radius_um:n
    template_radius_um:n merge_similarity_lag_ms:n freq_min:n freq_max:n cache_preprocessing_mode:s
    peak_sign:s detect_threshold:n n_peaks_per_channel:n n_svd_components_per_channel:n n_pca_features:n
    clustering_recursive_depth:n ms_before:n ms_after:n template_sparsify_threshold:n template_min_snr_ptp:n
    template_max_jitter_ms:n min_firing_rate:n gather_mode:s job_kwargs:m seed:n? save_array:b debug:b"""
# get_default_sorter_params(name) of SpikeInterface 0.105.3; kilosort4's own keys (from batch_size on)
# come from kilosort.parameters (Kilosort 4.1.7, the [ks4] pin), read by SpikeInterface when it is installed.
SORTER_PARAMS: dict[str, dict[str, str]] = {
    "kilosort2_5": _spec(f"""detect_threshold:n projection_threshold:l preclust_threshold:n whiteningRange:n
        momentum:l car:b minFR:n minfr_goodchannels:n nblocks:n sig:n freq_min:n sigmaMask:n lam:n nPCs:n
        ntbuff:n nfilt_factor:n NT:n? AUCsplit:n do_correction:b wave_length:n keep_good_only:b
        skip_kilosort_preprocessing:b scaleproc:n? save_rez_to_mat:b delete_tmp_files:l
        delete_recording_dat:b {_JOB}"""),
    "kilosort4": _spec(f"""do_CAR:b invert_sign:b save_extra_vars:b save_preprocessed_copy:b torch_device:s
        bad_channels:l? clear_cache:b do_correction:b skip_kilosort_preprocessing:b keep_good_only:b
        use_binary_file:b delete_recording_dat:b {_JOB}
        batch_size:n nblocks:n Th_universal:n Th_learned:n nt:n shift:n? scale:n? artifact_threshold:n nskip:n
        whitening_range:n highpass_cutoff:n binning_depth:n sig_interp:n drift_smoothing:l nt0min:n? dmin:n?
        dminx:n min_template_size:n template_sizes:n nearest_chans:n nearest_templates:n
        max_channel_distance:n? max_peels:n templates_from_data:b n_templates:n n_pcs:n Th_single_ch:n
        acg_threshold:n ccg_threshold:n cluster_neighbors:n cluster_downsampling:n max_cluster_subset:n?
        x_centers:n? cluster_init_seed:n duplicate_spike_ms:n position_limit:n batch_downsampling:n"""),
    "tridesclous2": _spec(_TDC),
    "lupin": _spec(f"{_TDC} whitening_radius_um:n template_matching_engine:s"),
    "spykingcircus2": _spec("""general:m filtering:m whitening:m detection:m selection:m
        apply_motion_correction:b motion_correction:m merging:m clustering:m cleaning:m min_firing_rate:n
        matching:m apply_preprocessing:b apply_whitening:b cache_preprocessing:m chunk_preprocessing:m
        multi_units_only:b job_kwargs:m seed:n? deterministic_peaks_detection:b debug:b"""),
    "mountainsort5": _spec(f"""scheme:s detect_threshold:n detect_sign:n detect_time_radius_msec:n
        snippet_T1:n snippet_T2:n npca_per_channel:n npca_per_subdivision:n snippet_mask_radius:n
        scheme1_detect_channel_radius:n scheme2_phase1_detect_channel_radius:n scheme2_detect_channel_radius:n
        scheme2_max_num_snippets_per_training_batch:n scheme2_training_duration_sec:n
        scheme2_training_recording_sampling_mode:s scheme3_block_duration_sec:n freq_min:n freq_max:n
        filter:b whiten:b whitening_seed:n? delete_temporary_recording:b {_JOB}"""),
}
TOP_KEYS = _spec("engine:s preprocessing:l sorting:m artifacts:m nwb:m")
# `artifacts`: thresholds of `wisc-sort scan-artifacts` (tasks/inputs/artifacts.py), each key optional (the
# defaults below fill the rest). Counts are raw int16 ADC values of the .bin; no step signature reads them.
ARTIFACT_KEYS = _spec("""window_s:n step_s:n refine_s:n flat_std:n flat_channel_fraction:n rail_fraction:n
    saturated_fraction:n transient_threshold:n""")
ARTIFACT_DEFAULTS: dict[str, float] = {
    "window_s": 0.05,  # each read: this many seconds of every channel...
    "step_s": 0.5,  # ...every step_s (10% of the data); a bout's edges are then refined to refine_s
    "refine_s": 0.01,
    "flat_std": 0.5,  # flat: a channel's standard deviation below this many counts...
    "flat_channel_fraction": 0.9,  # ...on at least this fraction of the AP channels
    "rail_fraction": 0.98,  # saturated: |value| >= rail_fraction * imMaxInt (the ADC's rail)...
    "saturated_fraction": 0.2,  # ...for at least this fraction of all values of the window
    "transient_threshold": 8.0,  # transient: |median over channels| > this x the channels' median noise
}
# `nwb`: what `wisc-sort export-nwb` (the nwb step) writes; `postpro` names the postprocessing set whose
# units, metrics and waveforms the file carries; the subject's species (latin), sex (M, F, U, O) and age
# (ISO 8601, e.g. P90D) go into the file's subject, as DANDI asks.
NWB_KEYS = _spec("postpro:s species:s sex:s age:s")
# `engine`: who computes the chain. Absent = spikeinterface (sortings made before the engine keep their
# signatures); every shipped options file says torch.
ENGINES = ("torch", "spikeinterface")
STEP_KEYS = _spec("step_name:s step_params:m")
SORTING_KEYS = _spec("sorter_name:s sorter_params:m sorter_path:s?")
# Old (0.98 fork) key -> 0.105 key(s): for the translation and for hints on unknown keys.
RENAMED = {
    "bin_duration_s": ("bin_s",),
    "win_sigma_um": ("win_scale_um",),
    "margin_um": ("hist_margin_um", "win_margin_um"),
}
_OLD_DRIFT_KEYS = """noise_level_params peak_detection_params extract_waveforms_params
    peak_localization_method peak_localization_params motion_params
    motion_method_params clean_motion_params"""
# The fork hard-coded these; 0.105's compute_motion hard-codes the same waveform window.
OLD_WAVEFORMS = {"ms_before": 0.1, "ms_after": 0.3}
OLD_INTERPOLATION = dict(
    border_mode="remove_channels", spatial_interpolation_method="kriging", sigma_um=20.0, p=1, num_closest=3
)
_TYPE_NAMES = dict(n="a number", s="a string", b="true/false", l="a list", m="a mapping", a="a value")
