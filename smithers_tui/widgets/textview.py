"""A scrolling view of one Rich renderable, drawn line by line (Textual's line API).

The renderable is rendered once for the width there is (again only when the width changes), and
each repaint copies the rows shown. Replacing what it shows never lays the screen out again: its
size is the layout's, only its scrollable height changes. (A Static in a scrolling container,
by contrast, is measured by rendering all of it at every layout of the screen.)"""
from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class TextView(ScrollView, can_focus=True):
    DEFAULT_CSS = "TextView { overflow-x: hidden; scrollbar-size-vertical: 1; }"

    def __init__(self, renderable: RenderableType = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.renderable: RenderableType = renderable
        self._strips: list[Strip] = []
        self._width = -1

    def set(self, renderable: RenderableType, *, keep_scroll: bool = False) -> None:
        self.renderable = renderable
        self._width = -1
        self._lay_out()
        if not keep_scroll:
            self.scroll_to(y=0, animate=False)
        self.refresh()

    def _lay_out(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or width == self._width:
            return
        console = self.app.console
        options = console.options.update_width(width)
        renderable = Text(self.renderable) if isinstance(self.renderable, str) else self.renderable
        lines = console.render_lines(renderable, options, pad=False)
        self._strips = [Strip(Segment.adjust_line_length(line, width), width) for line in lines]
        self._width = width
        self.virtual_size = Size(width, len(self._strips))

    def on_resize(self) -> None:
        self._lay_out()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        self._lay_out()
        i = y + round(self.scroll_y)
        width = self.scrollable_content_region.width
        if 0 <= i < len(self._strips):
            return self._strips[i].apply_style(self.rich_style)
        return Strip.blank(width, self.rich_style)
