"""The landing page's words in English and Simplified Chinese, and which of the two a request gets.

`?lang=en` or `?lang=zh` (the page's own switch) wins; otherwise the browser's `Accept-Language`; otherwise
English. The strings are constants of this module: the few with markup are marked safe here, and nothing a
client sends is ever put into them.
"""

from __future__ import annotations

from collections.abc import Mapping

from markupsafe import Markup
from werkzeug.datastructures import LanguageAccept

LANGUAGES = {"en": "English", "zh": "简体中文"}  # code -> its own name, shown in the switch
HTML_LANG = {"en": "en", "zh": "zh-CN"}
DEFAULT = "en"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "status": "The relay is up",
        "base_url": "Base URL for this deployment",
        "base_url_hint": "Paste it wherever a client asks for the OpenAI API address (base URL, API host, proxy URL).",
        "without_v1": Markup("Some clients want it without <code>/v1</code>:"),
        "copy_button": "Copy",
        "copied": "Copied",
        "select_and_copy": "Select and copy",
        "press_ctrl_c": "Press Ctrl+C",
        "key": "Key",
        "relay_key_mode": Markup(
            "This relay needs a <strong>relay key</strong>: use the key its owner gave you wherever your client "
            "asks for an API key. Your requests are sent on with the owner's upstream key."),
        "pass_through_mode": Markup(
            "Pass-through: use <strong>your own API key</strong> (for example <code>sk-...</code>) wherever your "
            "client asks for one. The relay forwards it untouched and keeps no copy."),
        "routes": "Routes",
        "custom route": "custom route",
        "own_endpoints": "The relay's own endpoints",
        "try_it": "Try it",
        "python_sdk": Markup("Python (official <code>openai</code> SDK)"),
        "as_json": "The same facts as JSON:",
        "health_check": "Health check:",
        "language": "Language",
    },
    "zh": {
        "status": "中转服务运行中",
        "base_url": "本部署的 Base URL",
        "base_url_hint": "在客户端要求填写 OpenAI API 地址的地方（Base URL、API Host、代理地址）粘贴它。",
        "without_v1": Markup("有些客户端要求不带 <code>/v1</code> 的地址："),
        "copy_button": "复制",
        "copied": "已复制",
        "select_and_copy": "请选中后复制",
        "press_ctrl_c": "请按 Ctrl+C",
        "key": "密钥",
        "relay_key_mode": Markup(
            "此中转需要<strong>中转密钥</strong>：在客户端要求填写 API 密钥的地方，填入中转管理员给你的密钥。"
            "你的请求会用管理员的上游密钥转发。"),
        "pass_through_mode": Markup(
            "直通模式：在客户端要求填写 API 密钥的地方，使用<strong>你自己的 API 密钥</strong>（例如 "
            "<code>sk-...</code>）。中转原样转发，不保留副本。"),
        "routes": "路由",
        "custom route": "自定义路由",
        "own_endpoints": "中转自身的接口",
        "try_it": "试一试",
        "python_sdk": Markup("Python（官方 <code>openai</code> SDK）"),
        "as_json": "同样的信息（JSON）：",
        "health_check": "健康检查：",
        "language": "语言",
    },
}


def choose_language(args: Mapping[str, str], accept: LanguageAccept) -> str:
    """`?lang=` when it names a language of the page, else the best of `Accept-Language`, else English."""
    asked = args.get("lang", "").strip().lower()
    if asked in TEXTS:
        return asked
    best = accept.best_match(["en", "zh-CN", "zh"], default=DEFAULT)
    return "zh" if best.lower().startswith("zh") else "en"
