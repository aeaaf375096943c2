"""IdPs as the login path reads them: kept per process, checked against one Redis version.

Every login needs its IdP row, whose configuration holds the IdP's metadata or discovery
document (often tens of KB of JSON). Reading and decoding it on every login costs a query
and a JSON parse; here each process keeps the rows it has read, and a version number in
Redis, bumped after any committed change to any IdP, makes every node drop them. The same
Redis read returns the mapping rules version (``rbac.current_rules``), so a login asks Redis
once for both.

Invalidation is wired to the model's save/delete signals (as Django's own ``Site`` cache
is), so the admin, the API, the CLI and metadata refreshes are all covered. A queryset
``update()`` bypasses them: only ``last_login_at`` is written that way, which nothing here
depends on. Should publishing a change fail (Redis down at that moment, a failover to a
replica that lost the key's last write), no row is used longer than HOT_PATH_CONFIG_TTL
seconds anyway.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from broker import rbac
from broker.models import IdentityProvider

logger = logging.getLogger("broker.idp_cache")
_VERSION_KEY = "idp:config-version"
_rows: dict[str, tuple[object, IdentityProvider, float]] = {}  # slug -> (version, row, read at)


def changed() -> None:
    """Every node reloads its IdPs (called after a committed change)."""
    _rows.clear()  # this process sees its own change at once
    # A random token, not a counter: a counter reset (Redis lost the key) could come back to
    # a value some process cached rows under.
    try:
        cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:  # committed: other nodes see it after HOT_PATH_CONFIG_TTL at the latest
        logger.exception("idp cache: could not publish an IdP change to the other nodes")


def get(slug: str, protocol: str | None = None) -> IdentityProvider | None:
    """The IdP ``slug`` (of ``protocol`` when given), or None. A private copy each call:
    callers may change it (and save it) without touching what other requests see."""
    versions = cache.get_many([_VERSION_KEY, rbac.RULES_VERSION_KEY])
    version = versions.get(_VERSION_KEY)
    if not settings.HOT_PATH_CONFIG_TTL or not _shared_cache():
        version = None  # nothing is cached (see _shared_cache)
    elif version is None:
        # No version yet (or Redis lost it): start one, and trust nothing cached before.
        version = uuid.uuid4().hex
        if not cache.add(_VERSION_KEY, version, timeout=None):
            version = None  # another process started one first: do not cache this read
    now = time.monotonic()
    cached = _rows.get(slug)
    fresh = (version is not None and cached is not None and cached[0] == version
             and now - cached[2] <= settings.HOT_PATH_CONFIG_TTL)
    if not fresh:
        idp = IdentityProvider.objects.filter(slug=slug).first()
        if idp is None:
            return None  # unknown slugs are not cached: they cost a query, not memory
        # A read racing a change is safe: the change replaces the version after its
        # commit, so whatever this read saw is dropped at the next login. A read inside a
        # transaction may see a change that is later rolled back: not cached.
        cached = (version, idp, now)
        if version is not None and not transaction.get_connection().in_atomic_block:
            _rows[slug] = cached
    if protocol is not None and cached[1].protocol != protocol:
        return None
    idp = copy.copy(cached[1])
    idp.config = copy.deepcopy(idp.config)
    idp.attribute_map = copy.deepcopy(idp.attribute_map)
    idp._state = copy.copy(idp._state)
    # current_rules() reuses this instead of asking Redis again.
    idp.rules_version = versions.get(rbac.RULES_VERSION_KEY, 0)
    return idp


def _shared_cache() -> bool:
    """Is the cache shared by every process (Redis)? A local-memory cache (the embedded
    default) cannot tell a server about a change made by the CLI: then nothing is cached."""
    return not settings.EMBEDDED


def _on_change(sender, **kwargs) -> None:
    # This process forgets at once (its own later reads in the same transaction see the
    # change); every node forgets when the change commits, which may also be now.
    _rows.clear()
    transaction.on_commit(changed, using=kwargs.get("using"))


post_save.connect(_on_change, sender=IdentityProvider, dispatch_uid="broker.idp_cache")
post_delete.connect(_on_change, sender=IdentityProvider, dispatch_uid="broker.idp_cache.delete")
