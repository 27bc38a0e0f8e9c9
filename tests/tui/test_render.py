"""Arrays to terminal cells (fer_tui.render) and the braille charts (fer_tui.charts): no terminal needed."""

from __future__ import annotations

import numpy as np
import pytest

from fer_tui.charts import BRAILLE_BASE, chart_text, line_chart
from fer_tui.render import (HEAT_LUT, RAMP, UPPER_HALF, bar, fit, half_block_cells, half_block_text, heat_to_rgb, image_text,
                            legend_text, plain_lines, saliency_picture)


def test_half_blocks_pair_rows_top_as_foreground_bottom_as_background():
    rgb = np.zeros((4, 3, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)  # top pixel of cell (row 0, col 1)
    rgb[1, 1] = (0, 0, 255)  # its bottom pixel
    rgb[3, 2] = (0, 255, 0)  # bottom pixel of cell (row 1, col 2)
    cells = half_block_cells(rgb)
    assert len(cells) == 2 and all(len(row) == 3 for row in cells)
    assert cells[0][1] == ((255, 0, 0), (0, 0, 255))
    assert cells[1][2] == ((0, 0, 0), (0, 255, 0))


def test_a_48_pixel_face_is_48_columns_by_24_rows():
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    text = image_text(face)
    lines = text.plain.split("\n")
    assert len(lines) == 24 and {len(line) for line in lines} == {48}
    assert set(text.plain.replace("\n", "")) == {UPPER_HALF}
    # every cell carries both pixels' colours, in 24-bit colour
    span_styles = [span.style for span in text.spans]
    assert span_styles and all(s.color.triplet is not None and s.bgcolor.triplet is not None for s in span_styles)
    assert tuple(span_styles[0].color.triplet) == (face[0, 0],) * 3
    assert tuple(span_styles[0].bgcolor.triplet) == (face[1, 0],) * 3


def test_odd_heights_repeat_the_last_row():
    cells = half_block_cells(np.full((3, 2, 3), 7, np.uint8))
    assert len(cells) == 2 and cells[1][0] == ((7, 7, 7), (7, 7, 7))
    assert len(plain_lines(np.zeros((5, 4), np.uint8))) == 3


def test_plain_fallback_uses_the_brightness_ramp():
    gray = np.zeros((4, 3), np.uint8)
    gray[0:2, 0] = 255  # bright cell
    gray[2:4, 2] = 128
    lines = plain_lines(gray)
    assert lines[0][0] == RAMP[-1] and lines[0][1] == RAMP[0]
    assert lines[1][2] == RAMP[len(RAMP) // 2]
    text = image_text(np.stack([gray] * 3, axis=2), plain=True)
    assert not text.spans and text.plain.split("\n") == lines  # characters only, no colour


def test_fit_scales_down_and_up_to_the_requested_side():
    face = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48).astype(np.uint8)
    assert fit(face, 48) is not None and fit(face, 48).shape == (48, 48)
    assert fit(face, 24).shape == (24, 24)
    assert fit(np.zeros((48, 48, 3), np.uint8), 30).shape == (30, 30, 3)
    assert image_text(face, size=30).plain.count("\n") == 14  # 15 rows


def test_heat_map_colours_run_from_dark_to_bright():
    colours = heat_to_rgb(np.array([[0.0, 0.5, 1.0]]))
    brightness = colours.astype(int).sum(axis=2)[0]
    assert brightness[0] < brightness[1] < brightness[2]
    assert (colours[0, 0] == HEAT_LUT[0]).all() and (colours[0, 2] == HEAT_LUT[255]).all()
    # a saliency map over the face: where it is weak the face shows, dimmed and grey; where strong, the colour alone
    face = np.full((1, 2), 200, np.uint8)
    picture = saliency_picture(face, np.array([[0.0, 1.0]]))
    assert len(set(picture[0, 0].tolist())) == 1 and picture[0, 0, 0] < 200
    assert picture[0, 1].tolist() == [252, 255, 164]
    assert saliency_picture(face, np.array([[0.0, 1.0]]), plain=True).tolist() == [[0, 255]]
    assert len(legend_text(10, low="", high="").plain) == 10


def test_half_block_text_reuses_styles_for_repeated_colours():
    text = half_block_text(np.zeros((2, 5, 3), np.uint8))
    assert len({id(span.style) for span in text.spans}) == 1


@pytest.mark.parametrize("fraction,expected", [(0.0, "    "), (1.0, "████"), (0.5, "██  "), (0.125 / 4, "▏   ")])
def test_bar_fills_in_eighths(fraction, expected):
    assert bar(fraction, 4) == expected


def test_line_chart_draws_a_rising_line_from_bottom_left_to_top_right():
    chart = line_chart([[(0, 0), (1, 1)]], width=4, height=2)
    assert len(chart.rows) == 2 and all(len(r) == 4 for r in chart.rows)
    assert chart.rows[1][0] != chr(BRAILLE_BASE) and chart.rows[0][3] != chr(BRAILLE_BASE)
    assert chart.rows[0][0] == chr(BRAILLE_BASE) and chart.rows[1][3] == chr(BRAILLE_BASE)
    assert chart.owners[1][0] == 0 and chart.owners[0][0] == -1


def test_chart_text_has_title_legend_axes_and_survives_flat_and_empty_series():
    text = chart_text([[(1, 0.5), (2, 0.5)], []], ["train", "val"], ["cyan", "magenta"], width=30, height=8, title="loss")
    lines = text.plain.split("\n")
    assert lines[0].startswith("loss") and "train" in lines[0] and "val" in lines[0]
    assert len(lines) == 8 and "│" in lines[1] and "└" in lines[-2]
