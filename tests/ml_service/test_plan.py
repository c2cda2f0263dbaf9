from __future__ import annotations

import pytest

from ml_service.profiles import BatchPoint, ModelProfile, ProfileBook
from ml_service.tools.plan import (
    REFERENCE_A5000,
    Device,
    parse_duration,
    parse_mix,
    plan_device,
)

A5000 = Device("A5000", 24, 1.0, 1.0, None)


def test_gpu_hours_are_counted_per_gpu() -> None:
    # 6000 hrnet images at 17.3 img/s need 346.8 s on one GPU; a 120 s deadline needs 3 GPUs,
    # each billed for the whole wall time.
    plan = plan_device(A5000, {"hrnet": 6000}, 120, ProfileBook(), "full")
    assert plan.gpus == 3
    assert plan.wall_h * 3600 == pytest.approx(6000 / (17.3 * 3))
    assert plan.gpu_hours == pytest.approx(3 * plan.wall_h)
    assert plan.cost == pytest.approx(plan.gpu_hours * 1.0)


def test_mix_throughput_is_the_harmonic_mean_of_per_model_rates() -> None:
    plan = plan_device(A5000, {"hrnet": 50, "unet": 50}, 3600, ProfileBook(), "full")
    expected = 1 / (0.5 / REFERENCE_A5000["hrnet"][0] + 0.5 / REFERENCE_A5000["unet"][0])
    assert plan.mix_images_per_s == pytest.approx(expected)
    assert plan.estimated


def test_measured_profile_wins_over_the_seed_estimate() -> None:
    book = ProfileBook()
    points = (BatchPoint(1, 100, 100.0), BatchPoint(4, 300, 200.0))  # 10 and 20 img/s
    book.put("GPU X", "hrnet/full:torch", ModelProfile(0, 75, 4, 4, points=points))
    gpu = Device("GPU X", 24, 2.0, 1.5, "GPU X")
    plan = plan_device(gpu, {"hrnet": 100}, 3600, book, "full")
    assert plan.rates["hrnet"].source == "measured"
    assert plan.rates["hrnet"].images_per_s == pytest.approx(20.0)
    assert plan.rates["hrnet"].batch_size == 4
    assert not plan.estimated


def test_estimates_scale_with_relative_speed_and_flag_memory() -> None:
    fast = Device("fast", 24, 1.0, 2.0, None)
    assert plan_device(fast, {"unet": 10}, 60, ProfileBook(), "full").rates[
        "unet"
    ].images_per_s == pytest.approx(2.04)
    tiny = Device("tiny", 12, 1.0, 1.0, None)  # 12 GB − 10.4 GB resident < 3.1 GB for unet b8
    assert not plan_device(tiny, {"unet": 10}, 60, ProfileBook(), "full").fits


def test_parsers() -> None:
    assert parse_mix("hrnet=1,unet=3") == {"hrnet": 0.25, "unet": 0.75}
    assert parse_duration("1h") == 3600 and parse_duration("90s") == 90
    assert parse_duration("30m") == 1800 and parse_duration("45") == 45
    with pytest.raises(ValueError):
        parse_duration("soon")
    with pytest.raises(ValueError):
        parse_mix("hrnet=0")


def test_a_measured_whole_path_below_inference_bounds_the_plan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    points = (BatchPoint(1, 100, 10.0),)  # inference alone: 100 img/s
    book = ProfileBook()
    book.put(
        "cpu-2core",
        "hrnet/small:onnxruntime",
        ModelProfile(0, 100, 1, 1, backend="onnxruntime", points=points, pipeline_images_per_s=20),
    )
    cpu = Device("cpu", 24, 0.0, 0.0, "cpu-2core")
    plan = plan_device(cpu, {"hrnet": 100}, 3600, book, "small")
    assert plan.rates["hrnet"].images_per_s == pytest.approx(20.0)
    assert plan.rates["hrnet"].source == "measured (whole path)"
    assert not plan.estimated
    # the field survives the file
    book.save(tmp_path / "b.json")
    again = ProfileBook.load(tmp_path / "b.json").get("cpu-2core", "hrnet/small:onnxruntime")
    assert again is not None and again.pipeline_images_per_s == 20


def test_the_whole_path_bounds_every_backend_of_the_model() -> None:
    book = ProfileBook()
    fast = (BatchPoint(1, 100, 5.0),)  # onnxruntime inference: 200 img/s, no whole-path figure
    slow = (BatchPoint(1, 100, 20.0),)  # torch inference: 50 img/s, whole path 30 img/s
    book.put("cpu", "hrnet/small:onnxruntime", ModelProfile(0, 100, 1, 1, points=fast))
    book.put(
        "cpu",
        "hrnet/small:torch",
        ModelProfile(0, 100, 1, 1, points=slow, pipeline_images_per_s=30),
    )
    plan = plan_device(Device("cpu", 24, 0.0, 0.0, "cpu"), {"hrnet": 10}, 60, book, "small")
    assert plan.rates["hrnet"].images_per_s == pytest.approx(30.0)
    assert plan.rates["hrnet"].source == "measured (whole path)"


def test_a_recorded_service_efficiency_scales_the_whole_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ml_service.tools.pipeline_rate import record_service_efficiency

    path = tmp_path / "b.json"
    book = ProfileBook()
    points = (BatchPoint(1, 100, 5.0),)  # inference 200 img/s
    profile = ModelProfile(0, 100, 1, 1, points=points, pipeline_images_per_s=60)
    book.put("cpu", "hrnet/small:torch", profile)
    book.save(path)
    assert record_service_efficiency(path, "cpu", "hrnet/small:torch", 0.6667, pipeline=60)
    assert not record_service_efficiency(path, "cpu", "unet/small:torch", 0.5, pipeline=1)
    book = ProfileBook.load(path)
    plan = plan_device(Device("cpu", 24, 0.0, 0.0, "cpu"), {"hrnet": 10}, 60, book, "small")
    assert plan.rates["hrnet"].images_per_s == pytest.approx(60 * 0.667)
    assert "service efficiency 0.67" in plan.rates["hrnet"].source
    assert not plan.estimated


def test_a_re_profile_keeps_the_measured_service_efficiency() -> None:
    from ml_service.tools.profile import keep_service_efficiency

    old = ModelProfile(1, 2, 1, 4, pipeline_images_per_s=80.0, service_efficiency=0.52)
    new = ModelProfile(1, 2, 1, 8, pipeline_images_per_s=70.0)
    kept = keep_service_efficiency(old, new)
    assert kept.service_efficiency == 0.52 and kept.pipeline_images_per_s == 70.0
    assert kept.max_batch_size == 8  # everything else is the new measurement
    assert keep_service_efficiency(None, new) is new
    fresh = ModelProfile(1, 2, 1, 8, service_efficiency=0.6)
    assert keep_service_efficiency(old, fresh).service_efficiency == 0.6


def test_the_plan_uses_the_backend_auto_runs_with_its_batch_size() -> None:
    book = ProfileBook()
    torch_points = (BatchPoint(1, 10, 20.0), BatchPoint(2, 20, 25.0))  # 80 img/s at 2
    openvino_points = (BatchPoint(1, 1, 10.0),)  # 100 img/s at 1: auto runs this one
    book.put(
        "cpu",
        "unet/small:torch",
        ModelProfile(0, 10, 2, 2, backend="torch", points=torch_points, service_efficiency=0.5),
    )
    book.put(
        "cpu",
        "unet/small:openvino",
        ModelProfile(
            0, 1, 1, 1, backend="openvino", points=openvino_points, pipeline_images_per_s=60
        ),
    )
    plan = plan_device(Device("cpu", 24, 0.0, 0.0, "cpu"), {"unet": 10}, 60, book, "small")
    rate = plan.rates["unet"]
    assert rate.batch_size == 1  # openvino's, not torch's
    assert rate.images_per_s == pytest.approx(60 * 0.5)  # whole path × efficiency, kept
