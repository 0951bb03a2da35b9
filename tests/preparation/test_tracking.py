"""Click and open tracking of an HTML part: which links are rewritten (http and https,
relative ones through ``<base>``), which stay (``mailto:``, ``tel:``, fragments,
``data-pr-notrack``, relative ones without ``<base>``, those inside MSO comments), and
that every other byte of the HTML stays as written (entities, comments, white space).
The expected bytes are built here from the same tokens (an HMAC: the same inputs give
the same token), so each test checks the whole part."""

from __future__ import annotations

import logging

import pytest

from postroute.preparation import Cache, prepare, tracking
from postroute.preparation import links as html_links
from tests.preparation.tracking_support import (
    LINKS,
    MID,
    TOKENS,
    click,
    outgoing,
    pixel,
    relayed,
    single,
)

PAGE = "<html><head>{head}</head><body>\r\n{body}\r\n</body></html>\r\n"


def page(body: str, head: str = "") -> str:
    return PAGE.format(head=head, body=body)


def with_pixel(html: str) -> str:
    at = html.rindex("</body>")
    return html[:at] + pixel() + html[at:]


def test_without_links_only_the_pixel_is_added_before_the_body_ends() -> None:
    html = page("<p>Thanks for your order.</p>")
    assert relayed(single(html.encode())) == single(with_pixel(html).encode())


def test_the_pixel_goes_before_the_last_body_end_tag_outside_comments() -> None:
    html = "<body><p>x</p><!-- </body> --><script>'</body>'</script></body>\r\n</html>"
    expected = html.replace("</body>\r\n", pixel() + "</body>\r\n")
    assert relayed(single(html.encode())) == single(expected.encode())


def test_without_a_body_end_tag_the_pixel_goes_at_the_end() -> None:
    html = "<p>Short</p>\r\n"
    assert relayed(single(html.encode())) == single((html + pixel()).encode())


def test_one_link_goes_through_the_tracking_host_and_the_rest_stays() -> None:
    html = page(
        '<p class="x">Your  <b>order</b>: <a  href="https://shop.example/o/1" id=a>here</a>'
    )
    expected = html.replace("https://shop.example/o/1", click(0, "https://shop.example/o/1"))
    assert relayed(single(html.encode())) == single(with_pixel(expected).encode())


def test_three_hundred_links_each_with_its_index_and_url() -> None:
    urls = [f"https://shop.example/item/{n}?ref=mail" for n in range(300)]
    html = page("\r\n".join(f'<a href="{u}">item {n}</a>' for n, u in enumerate(urls)))
    expected = page(
        "\r\n".join(f'<a href="{click(n, u)}">item {n}</a>' for n, u in enumerate(urls))
    )
    assert relayed(single(html.encode())) == single(with_pixel(expected).encode())
    for n, url in enumerate(urls):
        found = TOKENS.read_click(click(n, url).rsplit("/", 1)[1])
        assert (found.message_id, found.index, found.url) == (MID, n, url)


def test_relative_links_resolve_against_base_href() -> None:
    head = '<base href="https://shop.example/shop/">'
    html = page('<a href="orders/1">a</a> <a href="/help">b</a> <a href="#top">c</a>', head)
    expected = page(
        f'<a href="{click(0, "https://shop.example/shop/orders/1")}">a</a> '
        f'<a href="{click(1, "https://shop.example/help")}">b</a> <a href="#top">c</a>',
        head,
    )
    assert relayed(single(html.encode())) == single(with_pixel(expected).encode())


def test_relative_links_without_base_are_left_as_they_are() -> None:
    html = page('<a href="orders/1">a</a> <a href="/help">b</a> <a href="//cdn.example/x">c</a>')
    assert relayed(single(html.encode()), opens=False) == single(html.encode())


def test_mailto_tel_fragments_notrack_and_mso_comments_stay_as_written() -> None:
    html = page(
        '<a href="mailto:help@shop.example?subject=Hi&amp;body=x">mail</a>\r\n'
        '<a href="tel:+4930123">call</a> <a href="#top">top</a> <a href="">empty</a>\r\n'
        '<a href="javascript:void(0)">js</a> <a href="cid:logo">cid</a>\r\n'
        '<a data-pr-notrack href="https://shop.example/private">kept</a>\r\n'
        '<!--[if mso]><v:roundrect href="https://shop.example/vml"><a href="https://shop.example'
        '/mso">mso</a></v:roundrect><![endif]-->\r\n'
        '<!--[if !mso]><!--><a href="https://shop.example/all">all</a><!--<![endif]-->'
    )
    expected = html.replace(
        '"https://shop.example/all"', f'"{click(0, "https://shop.example/all")}"'
    )
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_entities_stay_as_written_and_the_token_holds_the_decoded_url() -> None:
    href = "https://shop.example/?a=1&amp;b=2&copy=3&#x26;c=&lt;4&gt;"
    url = "https://shop.example/?a=1&b=2&copy=3&c=<4>"  # as a browser reads it
    html = page(f'<p>&nbsp;&copy; 2026 &amp; &#169; caf&eacute;</p><a href="{href}">x</a>')
    expected = html.replace(href, click(0, url))
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_unquoted_and_single_quoted_values_and_upper_case_names() -> None:
    html = page("<A HREF=https://shop.example/a>a</A> <a href='https://shop.example/b'>b</a>")
    expected = page(
        f'<A HREF="{click(0, "https://shop.example/a")}">a</A> '
        f"<a href='{click(1, 'https://shop.example/b')}'>b</a>"
    )
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_white_space_around_a_url_is_not_part_of_it() -> None:
    html = page('<a href=" https://shop.example/x\r\n ">x</a>')
    expected = html.replace(" https://shop.example/x\r\n ", click(0, "https://shop.example/x"))
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_opens_only_leaves_the_links_and_clicks_only_adds_no_pixel() -> None:
    html = page('<a href="https://shop.example/">x</a>')
    assert relayed(single(html.encode()), clicks=False) == single(with_pixel(html).encode())
    expected = html.replace("https://shop.example/", click(0, "https://shop.example/"))
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_with_tracking_off_the_content_is_left_as_it_is() -> None:
    content = single(page('<a href="https://shop.example/">x</a>').encode())
    off = {"opens": False, "clicks": False}
    assert tracking.track(content, "cnt_1", "msg_1", LINKS, **off) is None  # nothing rewritten
    data = prepare(outgoing(content, **off), None, None, None, LINKS).data
    assert data.endswith(content)
    on = prepare(outgoing(content), None, None, None, LINKS).data
    assert not on.endswith(content)  # the same content tracked: rewritten


def test_markup_inside_text_elements_and_comments_is_no_link() -> None:
    text_only = (
        '<title><a href="https://t.example/"></title><style>a[href="x"]{}</style>'
        "<script>document.write(\"<a href='https://s.example/'>\")</script>"
        '<textarea><a href="https://ta.example/"></textarea><!-- <a href="https://c.example/"> -->'
        '<!--> <a href="https://shop.example/a">a</a> <!-- x --!> <a href="https://shop.example/b">'
    )
    html = page(text_only + '<p title="1 > 0"><a href=https://shop.example/c>c</a></p>')
    expected = (
        html.replace("https://shop.example/a", click(0, "https://shop.example/a"))
        .replace("https://shop.example/b", click(1, "https://shop.example/b"))
        .replace("https://shop.example/c", f'"{click(2, "https://shop.example/c")}"')
    )
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_links_the_two_readers_see_differently_leave_the_part_untracked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a browser keeps <template> content out of the document; the tokenizer sees a link
    html = page('<template><a href="https://t.example/">t</a></template><a href="https://x/">x</a>')
    with caplog.at_level(logging.DEBUG, logger="postroute.preparation"):
        assert relayed(single(html.encode())) == single(html.encode())
    assert "left untracked" in caplog.text


def test_a_link_lexbor_clones_for_misnested_markup_is_still_one_link() -> None:
    html = page('<p><a href="https://shop.example/x">one<p>two</a></p>')
    expected = html.replace("https://shop.example/x", click(0, "https://shop.example/x"))
    assert relayed(single(html.encode()), opens=False) == single(expected.encode())


def test_links_are_found_once_per_content(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    find = html_links.find

    def counted(text: str) -> html_links.Found:
        calls.append(text)
        return find(text)

    monkeypatch.setattr(html_links, "find", counted)
    content = single(page('<a href="https://shop.example/">x</a>').encode())
    cache = Cache()
    first = prepare(outgoing(content, message_id=MID), None, None, cache, LINKS).data
    other = "msg_" + "1" * 26
    second = prepare(outgoing(content, message_id=other), None, None, cache, LINKS).data
    assert len(calls) == 1
    assert click(0, "https://shop.example/").encode() in first
    assert click(0, "https://shop.example/", other).encode() in second
