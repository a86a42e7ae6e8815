"""The free-disk check commands make before they write (store/disk.py)."""
from __future__ import annotations

import pytest

from faket_dask import store as st
from faket_dask.errors import FaketError


def test_a_run_that_cannot_fit_is_refused_in_one_line_naming_the_path(tmp_path):
    assert st.disk_free_bytes(tmp_path / "not" / "yet" / "made") > 0  # nearest existing parent
    free = st.disk_free_bytes(tmp_path)  # other writers move it a little: margins below
    st.check_disk(tmp_path, free // 2)
    with pytest.raises(FaketError, match=rf"^{tmp_path}: too little disk: needs up to .* GiB free$"):
        st.check_disk(tmp_path, free + 2**40)
