"""The `classicmodels` schema plus `ratings`, as SQLAlchemy Core tables (portable to SQLite and MySQL)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

productlines = Table(
    "productlines",
    metadata,
    Column("productLine", String(50), primary_key=True),
    Column("textDescription", String(4000)),
    Column("htmlDescription", Text),
)

products = Table(
    "products",
    metadata,
    Column("productCode", String(15), primary_key=True),
    Column("productName", String(70), nullable=False),
    Column("productLine", String(50), ForeignKey("productlines.productLine"), nullable=False),
    Column("productScale", String(10), nullable=False),
    Column("productVendor", String(50), nullable=False),
    Column("productDescription", Text, nullable=False),
    Column("quantityInStock", SmallInteger, nullable=False),
    Column("buyPrice", Numeric(10, 2), nullable=False),
    Column("MSRP", Numeric(10, 2), nullable=False),
)

offices = Table(
    "offices",
    metadata,
    Column("officeCode", String(10), primary_key=True),
    Column("city", String(50), nullable=False),
    Column("phone", String(50), nullable=False),
    Column("addressLine1", String(50), nullable=False),
    Column("addressLine2", String(50)),
    Column("state", String(50)),
    Column("country", String(50), nullable=False),
    Column("postalCode", String(15), nullable=False),
    Column("territory", String(10), nullable=False),
)

employees = Table(
    "employees",
    metadata,
    Column("employeeNumber", Integer, primary_key=True, autoincrement=False),
    Column("lastName", String(50), nullable=False),
    Column("firstName", String(50), nullable=False),
    Column("extension", String(10), nullable=False),
    Column("email", String(100), nullable=False),
    Column("officeCode", String(10), ForeignKey("offices.officeCode"), nullable=False),
    Column("reportsTo", Integer, ForeignKey("employees.employeeNumber")),
    Column("jobTitle", String(50), nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("customerNumber", Integer, primary_key=True, autoincrement=False),
    Column("customerName", String(50), nullable=False),
    Column("contactLastName", String(50), nullable=False),
    Column("contactFirstName", String(50), nullable=False),
    Column("phone", String(50), nullable=False),
    Column("addressLine1", String(50), nullable=False),
    Column("addressLine2", String(50)),
    Column("city", String(50), nullable=False),
    Column("state", String(50)),
    Column("postalCode", String(15)),
    Column("country", String(50), nullable=False),
    Column("salesRepEmployeeNumber", Integer, ForeignKey("employees.employeeNumber")),
    Column("creditLimit", Numeric(10, 2)),
)

orders = Table(
    "orders",
    metadata,
    Column("orderNumber", Integer, primary_key=True, autoincrement=False),
    Column("orderDate", Date, nullable=False),
    Column("requiredDate", Date, nullable=False),
    Column("shippedDate", Date),
    Column("status", String(15), nullable=False),
    Column("comments", Text),
    Column("customerNumber", Integer, ForeignKey("customers.customerNumber"), nullable=False),
)

orderdetails = Table(
    "orderdetails",
    metadata,
    Column("orderNumber", Integer, ForeignKey("orders.orderNumber"), primary_key=True),
    Column("productCode", String(15), ForeignKey("products.productCode"), primary_key=True),
    Column("quantityOrdered", Integer, nullable=False),
    Column("priceEach", Numeric(10, 2), nullable=False),
    Column("orderLineNumber", SmallInteger, nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("customerNumber", Integer, ForeignKey("customers.customerNumber"), primary_key=True),
    Column("checkNumber", String(50), primary_key=True),
    Column("paymentDate", Date, nullable=False),
    Column("amount", Numeric(10, 2), nullable=False),
)

ratings = Table(
    "ratings",
    metadata,
    Column("customerNumber", Integer, ForeignKey("customers.customerNumber"), primary_key=True),
    Column("productCode", String(15), ForeignKey("products.productCode"), primary_key=True),
    Column("productRating", Integer, nullable=False),
)

# Insert order that satisfies the foreign keys (drop in reverse).
TABLE_ORDER = [
    productlines,
    products,
    offices,
    employees,
    customers,
    orders,
    orderdetails,
    payments,
    ratings,
]
