"""Deterministic synthetic `classicmodels` data, with ratings that carry learnable structure.

Ratings come from what customers bought. Each customer's taste over product lines is drawn around
their country's taste, their credit limit sets how much they like expensive models, and each
product has a latent quality: so a content-based model (city/country/credit limit on one side,
line/scale/price on the other) has real signal to learn, and ratings are not uniform noise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, func, inspect, select

from recsys_platform.batch.contract import COLUMN_NAMES, SOURCE_COLUMNS
from recsys_platform.batch.seed import schema

PRODUCT_LINES = [
    ("Classic Cars", "Attention car enthusiasts: make your wildest car ownership dreams come true."),
    ("Motorcycles", "Our motorcycles are state of the art replicas of classic and contemporary bikes."),
    ("Planes", "Unique, diecast airplane and helicopter replicas suitable for collections."),
    ("Ships", "The perfect holiday or anniversary gift for executives, clients and friends."),
    ("Trains", "Model trains are a rewarding hobby for enthusiasts of all ages."),
    ("Trucks and Buses", "The Truck and Bus models are realistic replicas of buses and trucks."),
    ("Vintage Cars", "Our Vintage Car models realistically portray automobiles produced 1900-1940."),
]
SCALES = ["1:10", "1:12", "1:18", "1:24", "1:32", "1:50", "1:72", "1:700"]
VENDORS = [
    "Min Lin Diecast", "Classic Metal Creations", "Highway 66 Mini Classics", "Red Start Diecast",
    "Motor City Art Classics", "Second Gear Diecast", "Autoart Studio Design", "Welly Diecast Productions",
    "Unimax Art Galleries", "Studio M Art Models", "Exoto Designs", "Gearbox Collectibles", "Carousel DieCast Legends",
]
# (city, state, postal code, country): the places of the lab's customers.
PLACES = [
    ("Nantes", None, "44000", "France"), ("Paris", None, "75016", "France"),
    ("Marseille", None, "13008", "France"), ("Lyon", None, "69004", "France"),
    ("Las Vegas", "NV", "83030", "USA"), ("San Francisco", "CA", "94217", "USA"),
    ("NYC", "NY", "10022", "USA"), ("Boston", "MA", "51247", "USA"),
    ("San Rafael", "CA", "97562", "USA"), ("New Haven", "CT", "97823", "USA"),
    ("Melbourne", "Victoria", "3004", "Australia"), ("Sydney", "NSW", "2067", "Australia"),
    ("Stavern", None, "4110", "Norway"), ("Oslo", None, "N 0106", "Norway"),
    ("Madrid", None, "28034", "Spain"), ("Barcelona", None, "08022", "Spain"),
    ("Lule", None, "S-958 22", "Sweden"), ("Göteborg", None, "S-844 67", "Sweden"),
    ("Frankfurt", None, "60528", "Germany"), ("München", None, "80686", "Germany"),
    ("Singapore", None, "079903", "Singapore"), ("Tokyo", "Tokyo", "106-0032", "Japan"),
    ("Osaka", "Osaka", "530-0003", "Japan"), ("Helsinki", None, "FIN-00180", "Finland"),
    ("London", None, "WX1 6LT", "UK"), ("Manchester", None, "EC2 5NT", "UK"),
    ("Torino", None, "10100", "Italy"), ("Reggio Emilia", None, "42100", "Italy"),
    ("Auckland", None, "", "New Zealand"), ("Vancouver", "BC", "V3F 2K1", "Canada"),
]
FIRST_NAMES = ["Carine", "Jean", "Peter", "Janine", "Jonas", "Susan", "Roland", "Julie", "Kwai", "Diego",
               "Christina", "Mary", "Eric", "Jeff", "Kelvin", "Juri", "Wendy", "Veysel", "Keitaro", "Mory"]
LAST_NAMES = ["Schmitt", "King", "Ferguson", "Labrune", "Bergulfsen", "Nelson", "Piestrzeniewicz", "Keitel",
                "Murphy", "Lee", "Freyre", "Berglund", "Petersen", "Saveley", "Natividad", "Young", "Leong",
                "Hashimoto", "Victorino", "Oeztan"]
ORDER_STATUSES = ["Shipped", "Shipped", "Shipped", "Shipped", "Resolved", "Cancelled", "On Hold", "Disputed"]

BASE_CUSTOMERS = 122
BASE_PRODUCTS = 110
ORDERS_PER_CUSTOMER = 2.7
LINES_PER_ORDER = 9.2


@dataclass(frozen=True)
class SeedSummary:
    """Row counts per table after a seed."""

    counts: dict[str, int]

    def __str__(self) -> str:
        return ", ".join(f"{t}={n:,}" for t, n in self.counts.items())


def _chunks(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


MODES = ("features", "collaborative")
LATENT_DIM = 8


@dataclass(frozen=True)
class LatentTastes:
    """The collaborative mode's hidden structure: user and item factors that the features explain
    only in part (country and credit for users, product line for items: about a fifth of each
    factor's variance), and a long-tailed popularity over the whole catalog (Zipf, exponent 1.1,
    in a random order: unrelated to any feature). `appeal(c)` is how likely customer `c` buys
    each product: what the collaborative mode's orders are drawn from, and what the producer's
    learnable sessions cart."""

    users: np.ndarray       # (customers, LATENT_DIM), in the order of the generated customers
    items: np.ndarray       # (products, LATENT_DIM), in the order of the generated products
    popularity: np.ndarray  # (products,), sums to 1
    by_country: dict[str, np.ndarray]
    credit_dir: np.ndarray
    credit_mean: float
    credit_std: float

    def appeal(self, user: np.ndarray) -> np.ndarray:
        """Purchase probabilities over the products for one user factor (a row of `users`)."""
        weights = self.popularity * np.exp(1.5 * (self.items @ user))
        return weights / weights.sum()

    def new_user(self, country: str, credit: float, rng: np.random.Generator) -> np.ndarray:
        """The factor of a customer the tables do not hold, drawn as the known ones were."""
        explained = self.by_country.get(country, np.zeros(LATENT_DIM)) * 0.4 \
            + (credit - self.credit_mean) / (self.credit_std + 1e-9) * self.credit_dir * 0.2
        return (explained + rng.normal(0, 0.9, LATENT_DIM)) / np.sqrt(LATENT_DIM)

    def shifted(self, strength: float, seed: int) -> LatentTastes:
        """Tastes that moved: each user's factor blended with a new draw (`strength` 1: all new)."""
        rng = np.random.default_rng(seed)
        fresh = rng.normal(0, 0.9, self.users.shape) / np.sqrt(LATENT_DIM)
        return replace(self, users=np.sqrt(1 - strength ** 2) * self.users + strength * fresh)


def _latent_tastes(seed: int, country_of: list[str], line_of: np.ndarray, credit: np.ndarray) -> LatentTastes:
    """Drawn from their own generator, so the other tables are those of the features mode."""
    rng = np.random.default_rng(seed + 1_000_003)
    n_customers, n_products = len(country_of), len(line_of)
    countries = sorted(set(country_of))
    by_country = {k: rng.normal(0, 1, LATENT_DIM) for k in countries}
    by_line = rng.normal(0, 1, (int(line_of.max()) + 1, LATENT_DIM))
    credit_dir = rng.normal(0, 1, LATENT_DIM)
    credit_z = (credit - credit.mean()) / (credit.std() + 1e-9)
    explained_u = np.vstack([by_country[k] for k in country_of]) * 0.4 + np.outer(credit_z, credit_dir) * 0.2
    users = explained_u + rng.normal(0, 0.9, (n_customers, LATENT_DIM))
    items = by_line[line_of] * 0.45 + rng.normal(0, 0.9, (n_products, LATENT_DIM))
    popularity = 1.0 / rng.permutation(np.arange(1, n_products + 1)) ** 1.1
    return LatentTastes(users / np.sqrt(LATENT_DIM), items, popularity / popularity.sum(), by_country, credit_dir,
                        float(credit.mean()), float(credit.std()))


def latent_tastes(data: dict[str, list[dict]], seed: int = 42) -> tuple[LatentTastes, list[int], list[str]]:
    """The collaborative latent tastes of generated tables (`generate(..., seed=seed)`), with the
    customer numbers and product codes their rows stand for."""
    lines = [name for name, _ in PRODUCT_LINES]
    customers, products = data["customers"], data["products"]
    tastes = _latent_tastes(seed, [c["country"] for c in customers],
                            np.array([lines.index(p["productLine"]) for p in products]),
                            np.array([c["creditLimit"] for c in customers], dtype=float))
    return tastes, [c["customerNumber"] for c in customers], [p["productCode"] for p in products]


def generate(scale: float = 1.0, seed: int = 42, mode: str = "features") -> dict[str, list[dict]]:
    """Build every table's rows in memory, deterministically from `seed`, `scale` and `mode`.

    `features` (the default): ratings built from the very features the model reads (taste for a
    product line by country, price against credit limit, latent quality). `collaborative`: what a
    customer buys and how they rate it come from latent tastes that the features explain only in
    part, with a long-tailed popularity (`_latent_tastes`), so that no design can be tuned to one
    generator.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rng = np.random.default_rng(seed)
    n_customers = max(2, round(BASE_CUSTOMERS * scale))
    n_products = max(len(PRODUCT_LINES), round(BASE_PRODUCTS * scale))
    n_lines = len(PRODUCT_LINES)
    out: dict[str, list[dict]] = {}

    out["productlines"] = [
        {"productLine": name, "textDescription": text, "htmlDescription": None}
        for name, text in PRODUCT_LINES
    ]

    # Products: every line represented, popularity follows a Zipf-like law, quality is latent.
    line_idx = np.concatenate([np.arange(n_lines), rng.integers(0, n_lines, n_products - n_lines)])
    scale_idx = rng.integers(0, len(SCALES), n_products)
    buy = np.round(rng.uniform(15, 105, n_products), 2)
    msrp = np.round(buy * rng.uniform(1.3, 2.2, n_products), 2)
    stock = rng.integers(0, 10_000, n_products)
    quality = rng.normal(0, 0.6, n_products)
    numbers = rng.permutation(np.arange(1000, 1000 + max(9000, n_products * 2)))[:n_products]
    codes = [f"S{SCALES[s].split(':')[1]}_{num}" for s, num in zip(scale_idx, numbers)]
    out["products"] = [
        {
            "productCode": codes[i],
            "productName": f"{1900 + int(numbers[i]) % 120} {VENDORS[i % len(VENDORS)].split()[0]} "
            f"{PRODUCT_LINES[line_idx[i]][0].rstrip('s')} #{i}",
            "productLine": PRODUCT_LINES[line_idx[i]][0],
            "productScale": SCALES[scale_idx[i]],
            "productVendor": VENDORS[int(rng.integers(0, len(VENDORS)))],
            "productDescription": "A faithful diecast replica with opening doors and detailed interior.",
            "quantityInStock": int(stock[i]),
            "buyPrice": float(buy[i]),
            "MSRP": float(msrp[i]),
        }
        for i in range(n_products)
    ]

    out["offices"] = [
        {"officeCode": str(i + 1), "city": c, "phone": f"+1 650 219 {4782 + i}", "addressLine1": f"{100 + i} Market St",
         "addressLine2": None, "state": s, "country": k, "postalCode": p or "00000", "territory": "NA" if k == "USA" else "EMEA"}
        for i, (c, s, p, k) in enumerate(PLACES[:7])
    ]
    n_employees = max(7, round(23 * scale ** 0.5))
    out["employees"] = [
        {"employeeNumber": 1002 + i, "lastName": LAST_NAMES[i % len(LAST_NAMES)],
         "firstName": FIRST_NAMES[i % len(FIRST_NAMES)], "extension": f"x{5800 + i}",
         "email": f"employee{1002 + i}@classicmodelcars.com", "officeCode": str(i % 7 + 1),
         "reportsTo": None if i == 0 else 1002 + (i - 1) // 4, "jobTitle": "President" if i == 0 else "Sales Rep"}
        for i in range(n_employees)
    ]

    # Customers: irregular numbers from 103 like the lab's; tastes drawn around their country's.
    customer_numbers = 103 + np.cumsum(rng.integers(1, 5, n_customers)) - 1
    place_idx = rng.integers(0, len(PLACES), n_customers)
    countries = sorted({p[3] for p in PLACES})
    country_taste = {k: rng.dirichlet(np.full(n_lines, 0.8)) for k in countries}
    credit = np.round(rng.gamma(4.0, 20_000, n_customers), -2)
    credit[rng.random(n_customers) < 0.15] = 0.0  # customers without credit, as in the lab
    taste = np.vstack([
        rng.dirichlet(country_taste[PLACES[place_idx[c]][3]] * 12 + 0.05) for c in range(n_customers)
    ])
    out["customers"] = [
        {
            "customerNumber": int(customer_numbers[c]),
            "customerName": f"{LAST_NAMES[c % len(LAST_NAMES)]} {VENDORS[c % len(VENDORS)].split()[-1]} Co. {c}",
            "contactLastName": LAST_NAMES[(c * 7) % len(LAST_NAMES)],
            "contactFirstName": FIRST_NAMES[(c * 3) % len(FIRST_NAMES)],
            "phone": f"40.32.{c % 100:02d}.{(c * 7) % 100:02d}",
            "addressLine1": f"{c % 90 + 1}, rue du Commerce",
            "addressLine2": None,
            "city": PLACES[place_idx[c]][0],
            "state": PLACES[place_idx[c]][1],
            "postalCode": PLACES[place_idx[c]][2] or None,
            "country": PLACES[place_idx[c]][3],
            "salesRepEmployeeNumber": 1002 + 1 + c % (n_employees - 1),
            "creditLimit": float(credit[c]),
        }
        for c in range(n_customers)
    ]

    # Orders and their lines: a customer buys from the lines they like, popular models first
    # (features mode), or by latent affinity times a long-tailed popularity (collaborative).
    latent = None
    if mode == "collaborative":
        latent = _latent_tastes(seed, [PLACES[i][3] for i in place_idx], line_idx, credit)
    orders_per_customer = rng.poisson(ORDERS_PER_CUSTOMER, n_customers) + 1
    products_by_line = [np.flatnonzero(line_idx == k) for k in range(n_lines)]
    popularity = [1.0 / np.arange(1, len(p) + 1) ** 0.8 for p in products_by_line]
    popularity = [w / w.sum() for w in popularity]
    start = dt.date(2003, 1, 6)
    orders, details = [], []
    bought: dict[tuple[int, int], int] = {}
    order_number = 10100
    for c in range(n_customers):
        if latent is not None:
            appeal = latent.appeal(latent.users[c])
        for _ in range(int(orders_per_customer[c])):
            day = start + dt.timedelta(days=int(rng.integers(0, 880)))
            shipped = rng.random() < 0.93
            orders.append({
                "orderNumber": order_number, "orderDate": day, "requiredDate": day + dt.timedelta(days=7),
                "shippedDate": day + dt.timedelta(days=int(rng.integers(1, 6))) if shipped else None,
                "status": ORDER_STATUSES[int(rng.integers(0, len(ORDER_STATUSES)))] if not shipped else "Shipped",
                "comments": None, "customerNumber": int(customer_numbers[c]),
            })
            n_items = int(min(n_products, max(1, rng.poisson(LINES_PER_ORDER))))
            chosen: set[int] = set()
            if latent is not None:
                chosen.update(int(p) for p in rng.choice(n_products, size=n_items, p=appeal))
            else:
                for k in rng.choice(n_lines, size=n_items, p=taste[c]):
                    candidates = products_by_line[k]
                    if len(candidates) == 0:
                        continue
                    chosen.add(int(candidates[rng.choice(len(candidates), p=popularity[k])]))
            for line_no, p in enumerate(sorted(chosen), start=1):
                details.append({
                    "orderNumber": order_number, "productCode": codes[p],
                    "quantityOrdered": int(rng.integers(20, 50)),
                    "priceEach": float(np.round(msrp[p] * rng.uniform(0.85, 1.0), 2)),
                    "orderLineNumber": line_no,
                })
                bought[(c, p)] = bought.get((c, p), 0) + 1
            order_number += 1
    out["orders"], out["orderdetails"] = orders, details
    out["payments"] = [
        {"customerNumber": o["customerNumber"], "checkNumber": f"CK{o['orderNumber']}",
         "paymentDate": o["orderDate"] + dt.timedelta(days=20), "amount": float(np.round(rng.uniform(1000, 60000), 2))}
        for o in orders if o["status"] == "Shipped"
    ]

    # Ratings: taste for the line, liking for price in line with the credit limit, quality, noise.
    pairs = np.array(sorted(bought), dtype=np.int64).reshape(-1, 2)
    c_idx, p_idx = pairs[:, 0], pairs[:, 1]
    line_affinity = np.log(taste[c_idx, line_idx[p_idx]] * n_lines + 1e-3)
    price_z = (msrp[p_idx] - msrp.mean()) / (msrp.std() + 1e-9)
    credit_z = (credit[c_idx] - credit.mean()) / (credit.std() + 1e-9)
    repeat = np.log1p([bought[(int(c), int(p))] - 1 for c, p in pairs])
    if latent is not None:  # the latent affinity, standardised, plus quality and repeat purchases
        affinity = np.einsum("nd,nd->n", latent.users[c_idx], latent.items[p_idx])
        line_affinity = (affinity - affinity.mean()) / (affinity.std() + 1e-9) * 1.2
        price_z = credit_z = np.zeros(len(pairs))
    score = 3.1 + 0.55 * line_affinity + 0.45 * price_z * credit_z + quality[p_idx] + 0.5 * repeat
    score += rng.normal(0, 0.55, len(pairs))
    stars = np.clip(np.rint(score), 1, 5).astype(int)
    out["ratings"] = [
        {"customerNumber": int(customer_numbers[c]), "productCode": codes[p], "productRating": int(r)}
        for c, p, r in zip(c_idx, p_idx, stars)
    ]
    return out


def is_seeded(engine: Engine) -> bool:
    """True when the ratings table exists and holds at least one row."""
    if not inspect(engine).has_table("ratings"):
        return False
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.ratings)).scalar_one() > 0


def seed(engine: Engine, scale: float = 1.0, seed: int = 42, replace: bool = False,
         batch_size: int = 5_000, mode: str = "features") -> SeedSummary:
    """Create the schema and fill it. Refuses to touch a seeded database unless `replace`.

    All inserts run in one transaction, so a failed seed leaves no half-filled tables behind
    (on engines with transactional DDL/DML; MySQL commits DDL implicitly, the rows stay atomic).
    """
    if is_seeded(engine) and not replace:
        raise FileExistsError(
            "the source database already holds ratings; pass --replace to overwrite it")
    data = generate(scale=scale, seed=seed, mode=mode)
    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        for table in reversed(schema.TABLE_ORDER):
            conn.execute(delete(table))
        for table in schema.TABLE_ORDER:
            rows = data[table.name]
            if table is schema.employees:  # self-reference: managers before their reports
                rows = sorted(rows, key=lambda r: r["employeeNumber"])
            for chunk in _chunks(rows, batch_size):
                conn.execute(table.insert(), chunk)
    return SeedSummary({t.name: len(data[t.name]) for t in schema.TABLE_ORDER})


def training_table(scale: float = 1.0, seed: int = 42, mode: str = "features"):
    """The training table joined in pandas from generated rows, without a database (for model
    tests and benchmarks; the platform itself builds it with an engine). The same join, columns
    and order as the contract: each source table's contract columns, joined on their keys."""
    data = generate(scale, seed=seed, mode=mode)
    ratings, customers, products = (pd.DataFrame(data[t])[list(SOURCE_COLUMNS[t])]
                                    for t in ("ratings", "customers", "products"))
    joined = ratings.merge(products, on="productCode").merge(customers, on="customerNumber")
    return joined[COLUMN_NAMES]
