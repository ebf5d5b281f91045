"""Job cards in the scripts people post job ads in: every character drawn from a font that has
it (never the .notdef box), right-to-left order kept across fonts, and a character that no
font has reported (job result and log), not drawn as a box (#14 item 5)."""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from talkinghead.compositor import NewsFrameRenderer, NewsLayout, NewsScene, fonts
from talkinghead.compositor.text_runs import draw_text, text_font

LAYOUT = NewsLayout()
FPS = 25
UNASSIGNED = "\u0378"  # no character there: no font can have it
PRIVATE_USE = "\ue000"

# title, company, location, skills: what a job ad in that script says.
SCRIPTS = {
    "latin": ("Ingénieure logicielle confirmée", "Société Générale", "Zürich", ["Qualité", "Python"]),
    "cyrillic": ("Старший инженер-программист", "Яндекс", "Москва", ["Разработка", "Тесты"]),
    "greek": ("Μηχανικός Λογισμικού", "Εταιρεία Αθηνών", "Αθήνα", ["Προγραμματισμός"]),
    "arabic": ("مهندس برمجيات أول", "شركة التقنية", "دبي", ["بايثون", "قواعد البيانات"]),
    "hebrew": ("מפתח תוכנה בכיר", "חברת הייטק", "תל אביב", ["פיתוח", "בדיקות"]),
    "chinese": ("高级软件工程师", "北京科技有限公司", "上海市", ["数据库", "云计算"]),
    "japanese": ("ソフトウェアエンジニア募集", "株式会社テクノロジー", "東京都", ["データベース"]),
    "korean": ("소프트웨어 엔지니어", "서울 기술 주식회사", "서울", ["데이터베이스", "클라우드"]),
    "devanagari": ("वरिष्ठ सॉफ्टवेयर इंजीनियर", "भारतीय प्रौद्योगिकी कंपनी", "मुंबई", ["डेटाबेस"]),
    "emoji": ("🚀 💼 👩‍💻", "🏢 🌍 🎉", "📍 🗺️", ["🐍", "☕️", "👍🏽", "🤖"]),
}


def scene_for(title: str, company: str, location: str, skills: list[str]) -> NewsScene:
    return NewsScene(title=title, company=company, location=location, skills=list(skills))


def as_tofu(text: str) -> str:
    """`text` with every visible character replaced by one that no font has."""
    return "".join(c if c.isspace() else UNASSIGNED for c in text if unicodedata.category(c) != "Cf"
                   and not 0xFE00 <= ord(c) <= 0xFE0F and not 0x1F3FB <= ord(c) <= 0x1F3FF)


def card(frame: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = LAYOUT.card
    return frame[y0:y1, x0:x1]


def ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) > 0


def drawn_alone(text: str, font) -> np.ndarray:
    """`text` drawn white on black by FreeType directly, in one font."""
    image = Image.new("L", (400, 200), 0)
    ImageDraw.Draw(image).text((20, 150), text, font=font, fill=255, anchor="ls")
    return ink(image)


@pytest.fixture(autouse=True)
def no_system_fonts(monkeypatch):
    """Fonts found through fontconfig differ between machines: these tests use only the
    fonts the package ships or depends on, so they mean the same on every machine."""
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", False)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_card_in_each_script_is_drawn_not_tofu(script):
    """The whole card (title, company, location, skill chips, ticker) in one script: nothing
    is missing, and the card differs from the same card with every character replaced by
    one no font has (before the fix, CJK, Devanagari and most emoji were drawn as .notdef
    boxes: exactly the same pixels as that card)."""
    title, company, location, skills = SCRIPTS[script]
    real = NewsFrameRenderer(scene_for(title, company, location, skills), LAYOUT, FPS)
    tofu = NewsFrameRenderer(
        scene_for(as_tofu(title), as_tofu(company), as_tofu(location), [as_tofu(s) for s in skills]),
        LAYOUT, FPS)
    assert real.missing_glyphs == ()
    assert tofu.missing_glyphs == ("U+0378",)
    assert not np.array_equal(card(real.static_frame), card(tofu.static_frame))


@pytest.mark.parametrize("bold", [False, True], ids=["regular", "bold"])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_character_comes_from_a_font_that_has_it(script, bold):
    """Each character's run is set in a face whose character map has it, and the glyph drawn
    is not that face's .notdef box (nor the primary face's)."""
    title, company, location, skills = SCRIPTS[script]
    font = text_font(40, bold)
    primary_notdef = drawn_alone(UNASSIGNED, fonts.load_font(40, bold))
    for word in " ".join([title, company, location, *skills]).split():
        layout = font.layout(word)
        assert layout.missing == (), word
        for run in layout.runs:
            for char in run.text:
                if not fonts.is_ignorable(ord(char)):
                    assert run.face.has(ord(char)), (word, run.face.name, f"U+{ord(char):04X}")
            glyphs = drawn_alone(run.text, run.font)
            notdef = drawn_alone(UNASSIGNED * len(run.text), run.font)
            assert glyphs.any(), (word, run.face.name)
            assert not np.array_equal(glyphs, notdef), (word, run.face.name)
            assert not np.array_equal(glyphs, primary_notdef), (word, run.face.name)


def test_scripts_get_the_faces_meant_for_them():
    face = {name: text_font(40).layout(SCRIPTS[name][0].split()[0]).runs[0].face.name
            for name in SCRIPTS}
    assert face["latin"] == face["cyrillic"] == face["greek"] == "DejaVu Sans"
    assert face["arabic"] == face["hebrew"] == "DejaVu Sans"
    assert face["chinese"] == "Noto Sans CJK SC"
    assert face["japanese"] == "Noto Sans CJK JP"  # kana in the line: Japanese glyph forms
    assert face["korean"] == "Noto Sans CJK KR"
    assert face["devanagari"] == "Noto Sans Devanagari"
    assert face["emoji"] == "Noto Emoji"
    assert text_font(40, bold=True).layout("वरिष्ठ").runs[0].face.name == "Noto Sans Devanagari Bold"


def run_containing(layout, text: str):
    (run,) = [r for r in layout.runs if text in r.text]
    return run


def test_right_to_left_order_is_kept_across_fonts():
    """An Arabic line with an emoji and a Chinese word inside: three fonts, read right to
    left, so the first Arabic word is drawn rightmost and the last one leftmost."""
    layout = text_font(40).layout("مهندس 🚀 برمجيات 北京 أول")
    first, rocket, middle, han, last = (run_containing(layout, t) for t in
                                        ("مهندس", "🚀", "برمجيات", "北京", "أول"))
    assert first.rtl and middle.rtl and last.rtl and not han.rtl
    assert last.x < han.x < middle.x < rocket.x < first.x
    assert {first.face.name, rocket.face.name, han.face.name} == {
        "DejaVu Sans", "Noto Emoji", "Noto Sans CJK SC"}
    # Left to right in a Hebrew line: Latin and numbers keep their own order inside it.
    layout = text_font(40).layout("משרה: Python 3 🐍 בתל אביב")
    assert [r.x for r in layout.runs] == sorted(r.x for r in layout.runs)
    tel_aviv, snake, python, job = (run_containing(layout, t) for t in ("בתל", "🐍", "Python", "משרה"))
    assert tel_aviv.x < snake.x < python.x < job.x
    # And a left-to-right line keeps an embedded Arabic phrase in its own right-to-left order.
    layout = text_font(40).layout("Job 🚀 مهندس برمجيات")
    assert run_containing(layout, "Job").x < run_containing(layout, "🚀").x < run_containing(
        layout, "برمجيات").x


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("abc", [0, 0, 0]),
        ("אבג", [1, 1, 1]),
        ("abc אבג def", [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]),
        ("אבג 123 דהו", [1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1]),  # numbers in RTL: level 2
        ("عربي 12", [1, 1, 1, 1, 1, 2, 2]),  # after Arabic letters: Arabic numbers
        ("אבג abc ", [1, 1, 1, 1, 2, 2, 2, 1]),  # trailing space: paragraph level
        ("x 1.5% y", [0] * 8),
        ("abc (אבג) def", [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]),
        ("א́b", [1, 1, 2]),  # a mark takes its base's level
    ],
)
def test_bidi_levels(text, levels):
    from talkinghead.compositor.bidi import embedding_levels

    assert embedding_levels(text) == levels


def test_bidi_visual_order():
    from talkinghead.compositor.bidi import visual_order

    assert visual_order([0, 0, 0]) == [0, 1, 2]
    assert visual_order([0, 0, 1, 1, 1, 0]) == [0, 1, 4, 3, 2, 5]
    assert visual_order([1, 1, 2, 2, 1]) == [4, 2, 3, 1, 0]


def test_a_card_sets_all_its_ideographs_in_one_language_s_forms():
    """Kana anywhere on the card: the ideographs of every line take Japanese forms (東京都
    alone would be set as Chinese)."""
    from talkinghead.compositor.text_runs import cjk_variant_for

    assert text_font(40).layout("東京都").runs[0].face.name == "Noto Sans CJK SC"
    with cjk_variant_for("ソフトウェアエンジニア 東京都"):
        assert text_font(40).layout("東京都").runs[0].face.name == "Noto Sans CJK JP"


def test_right_to_left_pixels_follow_the_layout():
    """Drawn, the emoji in an Arabic line lands between the two Arabic words, where the
    layout put it: the runs are really drawn in visual order."""
    font = text_font(48)
    text = "مهندس 🚀 برمجيات"
    layout = font.layout(text)
    image = Image.new("L", (int(layout.width) + 40, 100), 0)
    draw_text(ImageDraw.Draw(image), (20, 20), text, font, 255)
    columns = np.flatnonzero(ink(image).any(axis=0))
    rocket = run_containing(layout, "🚀")
    alone = Image.new("L", image.size, 0)
    ImageDraw.Draw(alone).text((20 + rocket.x, 20 + font.getmetrics()[0]), rocket.text,
                               font=rocket.font, fill=255, anchor="ls")
    rocket_columns = np.flatnonzero(ink(alone).any(axis=0))
    assert columns.min() < rocket_columns.min() and rocket_columns.max() < columns.max()
    drawn = ink(image)[:, rocket_columns.min(): rocket_columns.max() + 1]
    assert np.array_equal(drawn, ink(alone)[:, rocket_columns.min(): rocket_columns.max() + 1])


def test_a_character_no_font_has_is_reported_and_logged_not_drawn_as_a_box(caplog):
    caplog.set_level(logging.WARNING, logger="talkinghead.compositor")
    title = f"Engineer {PRIVATE_USE} 高级 {UNASSIGNED}"
    scene = scene_for(title, "ACME", "Berlin", ["Go", f"x{PRIVATE_USE}"])
    renderer = NewsFrameRenderer(scene, LAYOUT, FPS)
    assert renderer.missing_glyphs == ("U+0378", "U+E000")
    (record,) = [r for r in caplog.records if getattr(r, "missing_glyphs", None)]
    assert record.levelno == logging.WARNING and record.missing_glyphs == ["U+0378", "U+E000"]
    # What is drawn in its place is the replacement character, never a face's .notdef box.
    layout = text_font(40).layout(f"A{PRIVATE_USE}B")
    assert layout.missing == (0xE000,) and "".join(r.text for r in layout.runs) == "A\ufffdB"
    boxed = drawn_alone(f"A{PRIVATE_USE}B", fonts.load_font(40))
    image = Image.new("L", (400, 200), 0)
    draw_text(ImageDraw.Draw(image), (20, 150), f"A{PRIVATE_USE}B", text_font(40), 255, anchor="ls")
    assert not np.array_equal(ink(image), boxed)


def test_invisible_format_characters_are_neither_drawn_nor_reported():
    layout = text_font(40).layout("Data\u200bbase \u200fEngineer\u00ad")
    assert layout.missing == ()
    assert "".join(r.text for r in layout.runs) == "Database Engineer"


def test_fitting_uses_the_width_of_the_fallback_fonts():
    """A CJK title is fitted by the width it is drawn with (Noto Sans CJK), not by the width
    of the primary face's boxes."""
    from talkinghead.compositor.text_fit import fit_line, fit_paragraph, text_width

    han = "软件工程师" * 12
    line = fit_line(han, 600, 40, 20, bold=True)
    assert line.lines[0].endswith("…") and text_width(line.lines[0], line.font) <= 600
    layout = line.font.layout(line.lines[0])
    assert layout.width == pytest.approx(sum(r.width for r in layout.runs))
    cjk = ImageFont.truetype(str(fonts.cjk_font_path()), 20, index=2)
    assert layout.width >= cjk.getlength(line.lines[0][:-1]) - 1
    para = fit_paragraph("数据 库 " * 40 + "🚀" * 30, 500, 3, 60, 30)
    assert len(para.lines) == 3 and all(text_width(x, para.font) <= 500 for x in para.lines)


def test_chinese_without_spaces_wraps_between_ideographs():
    """Chinese has no spaces: a long title wraps onto its three lines (not one line cut with
    an ellipsis), no line starts with closing punctuation, and nothing is lost or reordered."""
    from talkinghead.compositor.text_fit import fit_paragraph, text_width

    title = "高级软件工程师，负责分布式系统的设计与开发。以及云计算平台的维护工作和团队管理"
    fitted = fit_paragraph(title, 700, 3, 66, 40, bold=True)
    assert len(fitted.lines) == 3 and "".join(fitted.lines) == title  # shrunk, not cut
    assert all(text_width(line, fitted.font) <= 700 for line in fitted.lines)
    assert not any(line[0] in "，。" for line in fitted.lines)
    longer = fit_paragraph(title * 3, 700, 3, 66, 40, bold=True)
    assert len(longer.lines) == 3 and longer.size == 40 and longer.lines[-1].endswith("…")
    assert "".join(longer.lines)[:-1] == (title * 3)[: len("".join(longer.lines)) - 1]


def test_long_card_in_every_script_stays_inside_the_card():
    words = " ".join(" ".join([t, c, loc, *sk]) for t, c, loc, sk in SCRIPTS.values())
    huge = scene_for(words * 3, words, words, [words[:80], *words.split()] * 3)
    small = scene_for("X", "ACME", "Berlin", [])
    changed = (NewsFrameRenderer(huge, LAYOUT, FPS).static_frame
               != NewsFrameRenderer(small, LAYOUT, FPS).static_frame).any(axis=2)
    x0, y0, x1, y1 = LAYOUT.card
    changed[y0:y1, x0:x1] = False
    changed[LAYOUT.ticker_band[1]:] = False  # the ticker's own text is not in the static frame
    assert not changed.any()


MONO = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
RECORDER = "\u2315"  # in DejaVu Sans Mono, in none of our own faces


def test_a_character_our_faces_lack_is_looked_up_through_fontconfig(monkeypatch, tmp_path):
    """A character none of our faces has is looked up through fontconfig, and a face found
    is used only if its character map really has it. A stand-in fc-list answers every query
    with DejaVu Sans Mono, so the test does not depend on the machine's font configuration."""
    if not MONO.is_file():
        pytest.skip("no DejaVu Sans Mono on this machine to stand in for a system font")
    fake = tmp_path / "fc-list"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\t0\\n' '{MONO}'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", True)
    monkeypatch.setattr(fonts, "FC_LIST", str(fake))
    assert fonts.system_face_for(0xE000) is None  # listed, but its map lacks the character
    face = fonts.system_face_for(ord(RECORDER))
    assert face is not None and face.origin == "fontconfig" and face.name == "DejaVu Sans Mono Book"
    layout = text_font(40, bold=True).layout(f"Call {RECORDER} now")
    assert layout.missing == ()
    (run,) = [r for r in layout.runs if RECORDER in r.text]
    assert run.face is face and run.stroke == 1  # no bold face of its own: stroked
    assert [r.face.name for r in layout.runs] == ["DejaVu Sans Bold", face.name, "DejaVu Sans Bold"]
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", False)
    assert fonts.system_face_for(ord(RECORDER)) is None
    assert text_font(40, bold=True).layout(f"Call {RECORDER} now").missing == (ord(RECORDER),)


def test_real_fontconfig_finds_a_font_on_this_machine(monkeypatch):
    """The real fc-list, asked for a character that this machine's DejaVu Sans Mono has."""
    import shutil

    if shutil.which(fonts.FC_LIST) is None or not MONO.is_file():
        pytest.skip("fontconfig or DejaVu Sans Mono not installed here")
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", True)
    face = fonts.system_face_for(ord(RECORDER))
    assert face is not None and face.origin == "fontconfig" and face.has(ord(RECORDER))
    renderer = NewsFrameRenderer(scene_for(f"Engineer {RECORDER}", "ACME", "Berlin", []), LAYOUT, FPS)
    assert renderer.missing_glyphs == ()
