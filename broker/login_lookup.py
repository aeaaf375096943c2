"""What a login reads, in one query: the (idp, subject) link, its user, the roles held.

Logins are the hot path. Through the ORM this is two queries (the link with its user, then
the user's roles), and building them costs more CPU than PostgreSQL spends answering: here
the SQL is built once, from the models' metadata, and each value goes through the same
converters the ORM applies (so SQLite's text datetimes, JSON and booleans come back as the
ORM would return them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, connections

from broker.models import FederatedIdentity, Role, UserRole


@dataclass(frozen=True)
class HeldRole:
    """A role the user held when the login read it: name, UserRole row and its source."""

    name: str
    row_id: int
    source: str


@dataclass(frozen=True)
class _Plan:
    sql: str
    link_fields: int  # the first N columns are the link's, then the user's, then 3 role columns
    user_fields: int
    converters: list[list]
    columns: list


@cache
def _plan(alias: str, vendor: str) -> _Plan:
    connection = connections[alias]
    q = connection.ops.quote_name
    user_meta, link_meta = get_user_model()._meta, FederatedIdentity._meta
    held, role = UserRole._meta, Role._meta

    def col(meta, name: str) -> str:
        return q(meta.get_field(name).column)

    columns = [field.get_col("fi") for field in link_meta.concrete_fields]
    columns += [field.get_col("u") for field in user_meta.concrete_fields]
    selected = [f"{q(c.alias)}.{q(c.target.column)}" for c in columns]
    selected += [f"r.{col(role, 'name')}", f"ur.{q(held.pk.column)}", f"ur.{col(held, 'source')}"]
    user_pk = q(user_meta.pk.column)
    sql = (
        f"SELECT {', '.join(selected)} FROM {q(link_meta.db_table)} fi "  # noqa: S608 (model metadata)
        f"JOIN {q(user_meta.db_table)} u ON u.{user_pk} = fi.{col(link_meta, 'user')} "
        f"LEFT JOIN {q(held.db_table)} ur ON ur.{col(held, 'user')} = u.{user_pk} "
        f"LEFT JOIN {q(role.db_table)} r ON r.{q(role.pk.column)} = ur.{col(held, 'role')} "
        f"WHERE fi.{col(link_meta, 'idp')} = %s AND fi.{col(link_meta, 'subject')} = %s"
    )
    # What the ORM's compiler applies to each column (backend converters, then the field's).
    converters = [connection.ops.get_db_converters(c) + c.get_db_converters(connection) for c in columns]
    return _Plan(sql, len(link_meta.concrete_fields), len(user_meta.concrete_fields), converters, columns)


def find(idp_id: int, subject: str, *, using: str = DEFAULT_DB_ALIAS
         ) -> tuple[FederatedIdentity, AbstractBaseUser, list[HeldRole]] | None:
    """The link for (idp, subject) with its user attached, and the user's roles; None if none."""
    connection = connections[using]
    plan = _plan(using, connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, [idp_id, subject])
        rows = cursor.fetchall()
    if not rows:
        return None
    values = list(rows[0][: plan.link_fields + plan.user_fields])
    for i, converters in enumerate(plan.converters):
        for convert in converters:
            values[i] = convert(values[i], plan.columns[i], connection)
    link_meta, user_model = FederatedIdentity._meta, get_user_model()
    link = FederatedIdentity.from_db(using, [f.attname for f in link_meta.concrete_fields],
                                     values[: plan.link_fields])
    user = user_model.from_db(using, [f.attname for f in user_model._meta.concrete_fields],
                              values[plan.link_fields:])
    link.user = user
    roles = [HeldRole(name=row[-3], row_id=row[-2], source=row[-1]) for row in rows if row[-2] is not None]
    return link, user, roles


def held_roles(user: AbstractBaseUser) -> list[HeldRole]:
    """The roles ``user`` holds, through the ORM (outside the login's hot path)."""
    rows = UserRole.objects.filter(user=user).values_list("role__name", "id", "source")
    return [HeldRole(name=name, row_id=row_id, source=source) for name, row_id, source in rows]
