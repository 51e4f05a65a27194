"""Local KRX, Wikipedia and Naver stock API: the listing services FinanceDataReader reads.

One address in 127.0.0.0/8 answers on port 443 (TLS, a certificate for every name) and port 80
(FinanceDataReader asks KRX and Naver over plain http), for data.krx.co.kr, en.wikipedia.org and
api.stock.naver.com; the flows reach it through INVESTFLOW_LISTINGS_BASE_URL (env()), the
library's URLs untouched. The listings are attributes a test edits between two runs:
`krx["STK"|"KSQ"]` and `indexes[("1", "028")]` (KOSPI 200), `indexes[("2", "203")]`
(KOSDAQ 150) as [(code, name)], `sp500` and `naver["NASDAQ"|"NYSE"]` as [(symbol, name)].
`broken[service] = "error" | "garbage"` makes krx, wikipedia or naver answer HTTP 503, or
200 with a page that is not the listing (as a maintenance page does).

KRX answers for a past trdDd as the real one does: `index_history[index]` holds the earlier
members as [(until, [(code, name)])] in day order (members before `until`; `indexes` from the
last `until` on), a non-trading day (a weekend, `holidays`) or a day before 2014-05-02 gets an
empty `output`, and the last working day (B161) is the last trading day on or before `inDate`,
never past `day`. `broken_days[day] = "error" | "garbage"` breaks the [11006] answer for one
trdDd only.
"""

from __future__ import annotations

import datetime as dt
import errno
import html
import math
import random
import string
from urllib.parse import parse_qs

from tasks.universes.sources import LISTING_HOSTS
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.tls import server_context

KOSPI200 = ("1", "028")
KOSDAQ150 = ("2", "203")
# KRX closed on these weekdays (2023-12-29: the year's last day; 2024: New Year, Seollal,
# 3.1, the general election, Labour Day, Children's Day, Buddha's Birthday, Memorial Day).
KRX_HOLIDAYS = {
    dt.date(2023, 12, 25),
    dt.date(2023, 12, 29),
    dt.date(2024, 1, 1),
    dt.date(2024, 2, 9),
    dt.date(2024, 2, 12),
    dt.date(2024, 3, 1),
    dt.date(2024, 4, 10),
    dt.date(2024, 5, 1),
    dt.date(2024, 5, 6),
    dt.date(2024, 5, 15),
    dt.date(2024, 6, 6),
}
KRX_FIRST_DAY = dt.date(2014, 5, 2)  # [11006] answers nothing for earlier days
MAINTENANCE = "<html><body><h1>서비스 점검중입니다</h1></body></html>"


def letters(i: int, width: int) -> str:
    out = ""
    for _ in range(width):
        i, r = divmod(i, 26)
        out = string.ascii_uppercase[r] + out
    return out


def kr_codes(start: int, n: int) -> list[tuple[str, str]]:
    return [(f"{start + i:06d}", f"KR Company {start + i}") for i in range(n)]


def us_symbols(prefix: str, n: int) -> list[tuple[str, str]]:
    width = max(3, math.ceil(math.log(max(n, 2), 26)))
    return [(prefix + letters(i, width), f"{prefix} Corp {i}") for i in range(n)]


class _Port(FakeServer):
    def __init__(self, owner: FakeListings, host: str, port: int, tls=None) -> None:
        super().__init__(host, port, tls=tls)
        self.owner = owner

    def route(self, req: Request) -> Response:
        return self.owner.route(req)


class FakeListings:
    """The three listing services on one address; see the module's docstring."""

    def __init__(
        self, nasdaq: int = 1200, nyse: int = 1100, kospi: int = 800, kosdaq: int = 1000
    ) -> None:
        context, self.ca_file = server_context(LISTING_HOSTS)
        for _ in range(20):
            octets = (random.randint(1, 254), random.randint(0, 255), random.randint(2, 254))
            self.address = "127.{}.{}.{}".format(*octets)
            try:
                self.https = _Port(self, self.address, 443, tls=context)
                self.http = _Port(self, self.address, 80)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        self.day = dt.date(2024, 6, 3)
        self.krx = {
            "STK": [("005930", "삼성전자"), ("000660", "SK하이닉스")] + kr_codes(100000, kospi - 2),
            "KSQ": [("247540", "에코프로비엠"), ("086520", "에코프로")]
            + kr_codes(300000, kosdaq - 2),
        }
        self.indexes = {KOSPI200: self.krx["STK"][:200], KOSDAQ150: self.krx["KSQ"][:150]}
        self.index_history: dict[tuple[str, str], list[tuple[dt.date, list]]] = {}
        self.holidays = set(KRX_HOLIDAYS)
        self.broken_days: dict[dt.date, str] = {}
        self.sp500 = [
            ("AAPL", "Apple Inc."),
            ("MSFT", "Microsoft"),
            ("BRK.B", "Berkshire Hathaway"),
            ("BF.B", "Brown–Forman"),
            ("META", "Meta Platforms"),
        ] + us_symbols("S", 498)
        self.naver = {"NASDAQ": us_symbols("N", nasdaq), "NYSE": us_symbols("Y", nyse)}
        self.broken: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        return {
            "INVESTFLOW_LISTINGS_BASE_URL": f"https://{self.address}",
            "INVESTFLOW_LISTINGS_CA_BUNDLE": str(self.ca_file),
        }

    @property
    def requests(self) -> list[Request]:
        return sorted(self.http.requests + self.https.requests, key=lambda r: r.at)

    # -- routes
    def route(self, req: Request) -> Response:
        host = req.headers.get("Host", "").split(":")[0]
        service = {
            "data.krx.co.kr": "krx",
            "en.wikipedia.org": "wikipedia",
            "api.stock.naver.com": "naver",
        }.get(host)
        if service is None:
            return Response(404, f"no such host {host}")
        if self.broken.get(service) == "error":
            return Response(503, MAINTENANCE, {"Content-Type": "text/html; charset=utf-8"})
        garbage = self.broken.get(service) == "garbage"
        if service == "krx":
            return self.krx_route(req, garbage)
        if service == "wikipedia":
            return self.wikipedia(req, garbage)
        return self.naver_route(req, garbage)

    def krx_route(self, req: Request, garbage: bool) -> Response:
        ymd = self.day.strftime("%Y%m%d")
        if req.path == "/comm/bldAttendant/executeForResourceBundle.cmd":
            key = req.query.get("key")
            if key == "B128.bld":
                return Response(200, {"result": {"output": [{"max_work_dt": ymd}]}})
            if key == "B161.bld":
                asked = dt.datetime.strptime(req.query.get("inDate", ymd), "%Y%m%d").date()
                worked = self.last_working_day(min(asked, self.day))
                return Response(200, {"result": {"output": [{"bis_work_dt": f"{worked:%Y%m%d}"}]}})
            return Response(400, "unknown key")
        if req.path != "/comm/bldAttendant/getJsonData.cmd" or req.method != "POST":
            return Response(404, "not found")
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        if garbage:
            # KRX's answer when it refuses a request it does not like: 200 and a page.
            return Response(200, "LOGOUT", {"Content-Type": "text/html"})
        bld = form.get("bld", "")
        if bld.endswith("MDCSTAT01501"):
            boards = ["STK", "KSQ"] if form.get("mktId") == "ALL" else [form.get("mktId", "")]
            rows = [self.krx_row(c, n, b) for b in boards for c, n in self.krx.get(b, [])]
            return Response(200, {"OutBlock_1": rows, "CURRENT_DATETIME": ymd})
        if bld.endswith("MDCSTAT00601"):
            day = dt.datetime.strptime(form.get("trdDd", ymd), "%Y%m%d").date()
            fault = self.broken_days.get(day)
            if fault == "error":
                return Response(503, MAINTENANCE, {"Content-Type": "text/html; charset=utf-8"})
            if fault == "garbage":
                return Response(200, "LOGOUT", {"Content-Type": "text/html"})
            members = self.index_members((form.get("indIdx"), form.get("indIdx2")), day)
            return Response(200, {"output": [self.index_row(c, n) for c, n in members]})
        return Response(200, {"error": f"bld {bld}"})

    def trading(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self.holidays and day >= KRX_FIRST_DAY

    def last_working_day(self, day: dt.date) -> dt.date:
        while not self.trading(day) and day > KRX_FIRST_DAY:
            day -= dt.timedelta(days=1)
        return day

    def index_members(self, index: tuple, day: dt.date) -> list[tuple[str, str]]:
        """The index's members on trdDd day: none on a day KRX did not trade."""
        if not self.trading(day):
            return []
        earlier = [members for until, members in self.index_history.get(index, []) if day < until]
        return earlier[0] if earlier else self.indexes.get(index, [])

    @staticmethod
    def krx_row(code: str, name: str, board: str) -> dict:
        return {
            "ISU_SRT_CD": code,
            "ISU_CD": f"KR7{code}003",
            "ISU_ABBRV": name,
            "MKT_NM": {"STK": "KOSPI", "KSQ": "KOSDAQ"}[board],
            "SECT_TP_NM": "",
            "TDD_CLSPRC": "71,300",
            "FLUC_TP_CD": "1",
            "CMPPREVDD_PRC": "300",
            "FLUC_RT": "0.42",
            "TDD_OPNPRC": "71,000",
            "TDD_HGPRC": "71,500",
            "TDD_LWPRC": "70,800",
            "ACC_TRDVOL": "10,234,567",
            "ACC_TRDVAL": "729,876,543,210",
            "MKTCAP": "425,651,234,000,000",
            "LIST_SHRS": "5,969,782,550",
            "MKT_ID": board,
        }

    @staticmethod
    def index_row(code: str, name: str) -> dict:
        return {
            "ISU_SRT_CD": code,
            "ISU_ABBRV": name,
            "TDD_CLSPRC": "71,300",
            "FLUC_TP_CD": "1",
            "STR_CMP_PRC": "300",
            "FLUC_RT": "0.42",
            "MKTCAP": "425,651,234,000,000",
        }

    def wikipedia(self, req: Request, garbage: bool) -> Response:
        if not req.path.startswith("/wiki/List_of_S%26P_500_companies"):
            return Response(404, "<html>Wikipedia does not have an article with this exact name")
        if garbage:
            return Response(200, "<html><body><p>No tables here.</p></body></html>")
        body = "".join(
            f"<tr><td><a href='#'>{html.escape(s)}</a></td><td>{html.escape(n)}</td>"
            "<td>Information Technology</td><td>Software</td><td>Somewhere</td>"
            "<td>1990-01-01</td><td>0000320193</td><td>1976</td></tr>"
            for s, n in self.sp500
        )
        page = (
            "<html><body><h1>List of S&amp;P 500 companies</h1>"
            "<table class='wikitable sortable' id='constituents'><tbody><tr><th>Symbol</th>"
            "<th>Security</th><th>GICS Sector</th><th>GICS Sub-Industry</th>"
            "<th>Headquarters Location</th><th>Date added</th><th>CIK</th><th>Founded</th></tr>"
            f"{body}</tbody></table>"
            "<table class='wikitable'><tr><th>Date</th><th>Added</th></tr></table></body></html>"
        )
        return Response(200, page, {"Content-Type": "text/html; charset=UTF-8"})

    def naver_route(self, req: Request, garbage: bool) -> Response:
        parts = req.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["stock", "exchange"] or parts[3] != "marketValue":
            return Response(404, {"message": "not found"})
        listing = self.naver.get(parts[2], [])
        if garbage:
            return Response(200, {"totalCount": 0, "stocks": None})
        page, size = int(req.query.get("page", 1)), int(req.query.get("pageSize", 20))
        stocks = [
            {
                "stockType": "worldstock",
                "symbolCode": s,
                "reutersCode": s + ".O",
                "stockName": n,
                "stockNameEng": n,
                "nationType": "USA",
                "industryCodeType": {"code": "57201010", "industryGroupKor": "소프트웨어"},
            }
            for s, n in listing[(page - 1) * size : page * size]
        ]
        return Response(200, {"totalCount": len(listing), "stocks": stocks})

    # -- lifecycle
    def __enter__(self) -> FakeListings:
        self.https.start()
        self.http.start()
        return self

    def __exit__(self, *exc) -> None:
        self.https.stop()
        self.http.stop()
