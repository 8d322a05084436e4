"""A small builder for Grafana dashboard JSON (schema 39): rows, stats, time series and bar gauges.

Panels are laid out in order on Grafana's 24-column grid: stats four units wide, time series twelve,
a row header starts a new line. Every query uses the `${datasource}` variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'
POOL = 'namespace=~"$namespace", pool=~"$pool"'


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    kind: str  # "stat" | "timeseries" | "bargauge" | "row"
    title: str
    description: str = ""
    queries: tuple[Query, ...] = ()
    unit: str = "short"
    width: int = 12
    height: int = 8
    max_value: float | None = None
    stacked: bool = False


def rate(metric: str, selector: str, by: str = "") -> str:
    """`sum [by (...)] (rate(metric{selector}[$__rate_interval]))`."""
    inner = f"rate({metric}{{{selector}}}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def stat(title: str, description: str, expr: str, unit: str = "short") -> Panel:
    return Panel("stat", title, description, (Query(expr),), unit, width=4, height=4)


def series(title: str, description: str, *queries: Query, unit: str = "short", **kw: Any) -> Panel:
    return Panel("timeseries", title, description, queries, unit, **kw)


def distribution(title: str, description: str, expr: str, unit: str = "short") -> Panel:
    """Bucket counts of a histogram (`sum by (le) (increase(..._bucket[$__range]))`) as bars."""
    return Panel("bargauge", title, description, (Query(expr, "{{le}}"),), unit)


def row(title: str) -> Panel:
    return Panel("row", title, width=24, height=1)


def quantiles(metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> tuple[Query, ...]:
    """histogram_quantile queries of a `_seconds` histogram, one per quantile."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in qs
    )


def variables(with_pool: bool) -> list[dict[str, Any]]:
    found = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        },
        _query_variable("namespace", "Namespace", 'label_values(up{job=~"mimo-.*"}, namespace)'),
    ]
    if with_pool:
        found.append(
            _query_variable("pool", "Pool", 'label_values(mimo_worker_running_requests{namespace=~"$namespace"}, pool)')
        )
    return found


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


@dataclass
class Layout:
    x: int = 0
    y: int = 0
    line_height: int = 0
    next_id: int = 1
    panels: list[dict[str, Any]] = field(default_factory=list)

    def place(self, panel: Panel) -> None:
        if panel.kind == "row" or self.x + panel.width > 24:
            self.x, self.y, self.line_height = 0, self.y + self.line_height, 0
        body = _panel_json(panel, self.next_id, {"x": self.x, "y": self.y, "w": panel.width, "h": panel.height})
        self.panels.append(body)
        self.next_id += 1
        self.x += panel.width
        self.line_height = max(self.line_height, panel.height)


def dashboard(uid: str, title: str, description: str, panels: list[Panel], with_pool: bool) -> dict[str, Any]:
    layout = Layout()
    for panel in panels:
        layout.place(panel)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mimo-serve"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": ["mimo-serve"],
                "asDropdown": True,
                "title": "MiMo Serve",
                "icon": "external link",
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables(with_pool)},
        "panels": layout.panels,
    }


def _panel_json(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    if panel.kind == "row":
        return {"id": panel_id, "type": "row", "title": panel.title, "collapsed": False, "gridPos": grid, "panels": []}
    targets = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": query.expr}
        if query.legend:
            target["legendFormat"] = query.legend
        if panel.kind == "bargauge":
            target.update({"format": "heatmap", "instant": True})
        targets.append(target)
    defaults: dict[str, Any] = {"unit": panel.unit, "color": {"mode": "palette-classic"}}
    if panel.max_value is not None:
        defaults.update({"min": 0, "max": panel.max_value})
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": True}
        if panel.stacked:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        defaults["custom"] = custom
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
        body["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    else:
        body["options"] = {
            "orientation": "vertical",
            "displayMode": "gradient",
            "showUnfilled": True,
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    return body
