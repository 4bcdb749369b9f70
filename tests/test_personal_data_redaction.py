"""Messages the platform stores or prints (errors, rejection reasons, logs) carry no ID or mobile number in clear
(core.privacy.redact_personal, applied by ingestion.monitoring.mask and every file rejection)."""

from __future__ import annotations

from core.privacy import HASH_SHOWN, id_number_hash, redact_personal
from ingestion.file_drop import FileRejected
from ingestion.monitoring import mask


def test_id_numbers_become_their_keyed_hash_and_mobiles_are_masked(monkeypatch):
    monkeypatch.setenv("DRC_ID_LOOKUP_KEY", "test-key")
    text = (
        "line 4 (公民身份号码=41018219600101001X): 手机 13812345678 breaks 11-digit rule; legacy 410182600101001; "
        "tel +86 139-0000; order 202611030000123456789, visit V20261103000123, fee 1234.50, 2026-11-03 08:00"
    )
    redacted = redact_personal(text)
    assert f"[身份证号 hmac:{id_number_hash('41018219600101001X')[:HASH_SHOWN]}]" in redacted
    assert f"hmac:{id_number_hash('410182600101001')[:HASH_SHOWN]}" in redacted
    assert "138****5678" in redacted
    for clear in ("41018219600101001X", "410182600101001", "13812345678"):
        assert clear not in redacted
    # numbers that are not ID or mobile numbers stay as they are: the message must still name the row
    for kept in ("202611030000123456789", "V20261103000123", "1234.50", "2026-11-03 08:00", "+86 139-0000"):
        assert kept in redacted


def test_without_the_key_a_message_masks_instead_of_failing(monkeypatch):
    monkeypatch.delenv("DRC_ID_LOOKUP_KEY", raising=False)
    assert redact_personal("key 41018219600101001X") == "key [身份证号 410182************]"


def test_rejections_and_stored_errors_are_redacted(monkeypatch):
    monkeypatch.setenv("DRC_ID_LOOKUP_KEY", "test-key")
    rejected = FileRejected(
        "姓名 is required", ["line 3 (公民身份号码=410182196001020018): 姓名 = '' breaks 姓名 is required"]
    )
    assert "410182196001020018" not in rejected.details[0] and "hmac:" in rejected.details[0]
    assert "13800001111" not in mask("vendor said: patient 13800001111 unknown")
