"""The lean runtime never imports torch (nor Ray, which only vp serve uses)."""

import subprocess
import sys


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys, vp.runtime, vp.runtime.sampling, vp.runtime.vocab, vp.runtime.layout, vp.runtime.masked_decoding, "
        "vp.runtime.superres, vp.runtime.kv_cache, vp.runtime.text_tokenizer, vp.runtime.media, vp.runtime.pipeline, "
        "vp.runtime.bench, vp.runtime.soak, vp.runtime.file_request, vp.runtime.cli\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runtime_imports_without_posix_modules():
    """As on Windows: no `resource` module. The pipeline, bench and builder still import, and the
    peak memory is read another way (or reported as unknown), never a crash."""
    code = (
        "import sys\n"
        "sys.modules['resource'] = None  # import resource -> ImportError\n"
        "import vp.runtime.pipeline, vp.runtime.bench, vp.engines.builder, vp.runtime.cli\n"
        "from vp.runtime.process_memory import peak_rss_mb\n"
        "assert peak_rss_mb() is None or peak_rss_mb() > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peak_memory_is_in_megabytes():
    from vp.runtime.process_memory import peak_rss_mb

    import numpy as np

    block = np.ones(200 * 2**20, np.uint8)  # 200 MB resident
    assert 200 <= peak_rss_mb() < 100_000  # MB, not KiB or bytes
    assert block.sum() == block.size
