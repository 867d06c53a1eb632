"""The lean runtime never imports torch."""

import subprocess
import sys


def test_runtime_modules_do_not_import_torch():
    code = (
        "import sys, vp.runtime, vp.runtime.sampling, vp.runtime.vocab, vp.runtime.masked_decoding, vp.runtime.kv_cache, vp.runtime.text_tokenizer, vp.runtime.media\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
