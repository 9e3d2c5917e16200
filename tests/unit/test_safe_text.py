"""Text from outside, escaped before it is recorded or echoed (services/common/safe_text.py)."""

from services.common.safe_text import escaped, has_control_characters


def test_controls_and_lone_surrogates_are_escaped_and_the_rest_kept():
    assert escaped("a\x00b\x0bc\x7f\x9f") == "a\\x00b\\x0bc\\x7f\\x9f"
    assert escaped("x\ud800") == "x\\ud800"
    assert escaped("山田 花子 (ヤマダ)") == "山田 花子 (ヤマダ)"
    assert escaped("abc\x00", 4) == "abc\\"
    assert has_control_characters("\x00") and not has_control_characters("普通")
