"""``teegate.toml``: one file for the gateway, its providers and agents; secrets come from
environment variables named in the file (``api_key_env``, ``admin_key_env``).

Every problem raises ConfigError naming the field (``providers[1].platform: ...``), so a bad
file stops start-up with a message an operator can act on."""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teegate import paths
from teegate.attest.binding import LAYOUTS
from teegate.attest.policy import Policy, load_policy
from teegate.errors import ConfigError, TeegateError
from teegate.ledger.model import DEFAULT_CURRENCIES, MAX_AMOUNT
from teegate.ledger.pricing import Price
from teegate.providers.registry import Platform, get_platform
from teegate.routing.trust import TrustLevel, parse_trust
from teegate.serving import ServerLimits

if TYPE_CHECKING:
    from teegate.chain.config import ChainConfig
    from teegate.x402.config import X402Config


@dataclass(frozen=True)
class CollateralConfig:
    """``[collateral]``: where the gateway fetches the Intel/AMD collateral a provider's
    report does not carry (cached on disk until the collateral itself expires)."""

    online: bool = True
    pccs_url: str = ""  # "" = $TEEGATE_PCCS_URL or Phala's PCCS
    kds_url: str = ""  # "" = $TEEGATE_KDS_URL or AMD KDS
    nvidia_ocsp_url: str = ""  # "" = $TEEGATE_NVIDIA_OCSP_URL or NVIDIA's responder
    nvidia_rim_url: str = ""  # "" = $TEEGATE_NVIDIA_RIM_URL or NVIDIA's RIM service
    cache_dir: Path | None = None  # None = <data_dir>/collateral


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    platform: Platform
    base_url: str
    models: tuple[str, ...]
    api_key: str | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    policy: Policy | None = None  # None for providers without evidence
    development: bool = False  # the policy trusts this installation's development roots
    trust_cap: TrustLevel | None = None  # never serve above this level (operator choice)
    attestation_ttl: int = 600
    timeout: float = 600.0
    # The output cap sent when a request names none ("max_completion_tokens" for models
    # that refuse "max_tokens", such as OpenAI's reasoning models).
    max_tokens_field: str = "max_tokens"
    # Endpoint-signed providers (platform.signatures == "endpoint"): deliver the answer
    # before its signature is fetched and checked (the trust header and the receipt say
    # so). Off: nothing of a plain answer, and not the end of a stream, before it verified.
    verify_after_delivery: bool = False
    # The provider speaks the Responses API (/v1/responses) itself: calls are forwarded with
    # the client's exact bytes; otherwise they are translated to chat completions.
    responses_api: bool = False
    # Per model this provider serves: the model's policy (``[models."NAME"]``), applied to its
    # evidence in addition to ``policy``, with this provider's roots of trust.
    model_policies: Mapping[str, Policy] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentConfig:
    id: str
    trust: TrustLevel = TrustLevel.STANDARD
    min_trust: TrustLevel = TrustLevel.STANDARD
    owner: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    providers: tuple[ProviderConfig, ...]
    agents: tuple[AgentConfig, ...] = ()
    collateral: CollateralConfig = field(default_factory=CollateralConfig)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    database_url: str = ""
    data_dir: Path = field(default_factory=Path)
    admin_key: str | None = None
    default_trust: TrustLevel = TrustLevel.STANDARD
    prefer: str = "price"
    max_body_bytes: int = 4 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024  # a provider's answer (plain or stream)
    quarantine_s: int = 300
    cooldown_s: float = 30.0
    allowed_fails: int = 3
    state_poll_s: float = 1.0
    ledger_expire_s: float = 60.0  # how often expired holds and conversations are released
    hold_s: float = 600.0  # a call's hold expires after this (released by the sweep)
    default_max_tokens: int = 4096
    # Answers of providers that sign only sha256(req):sha256(resp) must be created within
    # this many seconds of the call, and are accepted once within it (gateway/replay.py).
    replay_window_s: int = 300
    currency: str | None = None  # ledger currency code; None: the ledger's default
    log_origin: str = "teegate.local/log"  # receipt log origin (C2SP key name)
    receipts: bool = True
    ledger: bool = True  # hold / settle every call in the ledger (wallets, conversations)
    ledger_durability: str = "full"  # SQLite: "full" survives power loss, "normal" a crash
    embedded: bool = False  # the no-config embedded default (development node)
    # connections: head/body deadlines, idle keep-alive, cap (teegate.serving)
    limits: ServerLimits = field(default_factory=ServerLimits)
    # Failed authentications per client address: this many at once, forgiven at this many
    # per window (teegate.gateway.throttle); then 429 with Retry-After.
    auth_fail_limit: int = 20
    auth_fail_window_s: float = 60.0
    # /v1/providers shows base URLs and unredacted status text to anyone (else: admin key).
    public_provider_details: bool = False
    public_metrics: bool = False  # /metrics without the admin key
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call (CORS); "*": any
    # Stored Responses API answers (store != false) are kept this long, then 404 and purged
    # (OpenAI keeps them 30 days too); an agent's history should not grow without bound.
    responses_retention_s: int = 30 * 86400
    chain: ChainConfig | None = None  # [chain]: conversation channels on chain (teegate.chain)
    x402: X402Config | None = None  # [x402]: keyless calls paid by x402 (teegate.x402)
    # [models."NAME"] policy = "FILE": the identities that may serve NAME, on every provider
    model_policies: Mapping[str, Policy] = field(default_factory=dict)
    # gateway.tee: where the gateway's own evidence comes from (gateway/self_attestation.py)
    tee: str = "none"

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.id == provider_id:
                return p
        return None


def _want(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__}")
    return value


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: unknown field "
                          f"(allowed: {', '.join(sorted(allowed))})")


MIN_ADMIN_KEY = 32  # characters; `openssl rand -hex 32` gives 64


def _admin_key(env_name: Any) -> str | None:
    """The admin key from its environment variable: unset is "admin API disabled"; a short or
    repetitive one stops start-up (it opens every wallet and receipt)."""
    key = _secret(env_name, "gateway.admin_key_env", required=False)
    if key is None:
        return None
    if len(key) < MIN_ADMIN_KEY or len(set(key)) < 8:
        raise ConfigError(
            f"gateway.admin_key_env: the admin key in ${env_name} has {len(key)} characters "
            f"({len(set(key))} distinct); use at least {MIN_ADMIN_KEY} random ones, e.g. "
            "`openssl rand -hex 32`")
    return key


def _secret(env_name: Any, where: str, *, required: bool) -> str | None:
    name = _want(env_name, str, where)
    value = os.environ.get(name)
    if not value and required:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return value or None


def _prices(data: Any, models: tuple[str, ...], where: str) -> dict[str, Price]:
    out: dict[str, Price] = {}
    for model, spec in _want(data, dict, where).items():
        w = f"{where}.{model}"
        if model not in models:
            raise ConfigError(f"{w}: model is not in this provider's models")
        _want(spec, dict, w)
        _only(spec, {"per_call", "input", "output"}, w)
        amounts = {k: _want(spec.get(k, 0), int, f"{w}.{k}")
                   for k in ("per_call", "input", "output")}
        if any(v < 0 for v in amounts.values()):
            raise ConfigError(f"{w}: prices must be >= 0")
        try:
            out[model] = Price(**amounts)
        except TeegateError as e:
            raise ConfigError(f"{w}: {e}") from None
    return out


def _policy(raw: Mapping[str, Any], where: str, base_dir: Path, development: bool) -> Policy:
    try:
        if "policy" in raw:
            path = Path(_want(raw["policy"], str, where + ".policy"))
            policy = load_policy(path if path.is_absolute() else base_dir / path)
        elif "policy_inline" in raw:
            policy = Policy.from_mapping(_want(raw["policy_inline"], dict,
                                               where + ".policy_inline"), base_dir=base_dir)
        else:
            policy = Policy.default()
        if development:
            from teegate.sim import development_policy

            policy = development_policy(base=policy)
    except ConfigError as e:
        raise ConfigError(f"{where}.policy: {e}") from e
    except TeegateError as e:
        raise ConfigError(f"{where}.policy: {e}") from e
    allowed = policy.binding.layouts
    if allowed and not allowed & set(LAYOUTS):
        # The gateway binds a provider's signing key (client.report_data) and pins no upstream
        # TLS key, so a TLS-only policy would reject every report it fetched.
        raise ConfigError(
            f"{where}.policy: binding.layouts {sorted(allowed)} allows only TLS layouts; the "
            f"gateway checks that report_data binds the provider's signing key and does not "
            f"pin upstream TLS keys: allow a key layout ({', '.join(LAYOUTS)}), or check "
            f"TLS-bound evidence with teegate verify --tls-key")
    return policy


_PROVIDER_FIELDS = {"id", "platform", "base_url", "models", "api_key_env", "prices", "policy",
                    "policy_inline", "development", "trust_cap", "attestation_ttl", "timeout",
                    "max_tokens_field", "verify_after_delivery", "responses_api"}


def _provider(raw: Any, i: int, base_dir: Path, ids: set[str]) -> ProviderConfig:
    where = f"providers[{i}]"
    _want(raw, dict, where)
    _only(raw, _PROVIDER_FIELDS, where)
    if "id" not in raw:
        raise ConfigError(f"{where}.id: missing")
    pid = _want(raw["id"], str, where + ".id")
    if not pid or "/" in pid or pid in ids:
        raise ConfigError(f"{where}.id: {pid!r} is empty, contains '/', or is a duplicate")
    if "platform" not in raw:
        raise ConfigError(f"{where}.platform: missing")
    platform = get_platform(_want(raw["platform"], str, where + ".platform"),
                            field=where + ".platform")
    base_url = raw.get("base_url", platform.default_base_url)
    if base_url is None:
        raise ConfigError(f"{where}.base_url: missing (platform {platform.name} has no default)")
    base_url = _want(base_url, str, where + ".base_url")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url: must start with http:// or https://")
    models_raw = _want(raw.get("models", []), list, where + ".models")
    if not models_raw:
        raise ConfigError(f"{where}.models: list at least one model")
    models = tuple(_want(m, str, f"{where}.models[{j}]") for j, m in enumerate(models_raw))
    for j, m in enumerate(models):
        # "m@attested" is how a request asks for a level: a model literally named so would
        # be served as itself, at whatever level its provider has.
        _, at, suffix = m.rpartition("@")
        try:
            level = parse_trust(suffix) if at else None
        except ConfigError:
            level = None
        if level is not None:
            raise ConfigError(f"{where}.models[{j}]: {m!r} ends in a trust level suffix "
                              f"('@{suffix}'), which requests use to ask for a level")
    api_key = (_secret(raw["api_key_env"], where + ".api_key_env", required=True)
               if "api_key_env" in raw else None)
    development = bool(_want(raw.get("development", False), bool, where + ".development"))
    policy = (_policy(raw, where, base_dir, development)
              if platform.evidence != "none" else None)
    cap = raw.get("trust_cap")
    ttl = _want(raw.get("attestation_ttl", 600), int, where + ".attestation_ttl")
    if ttl < 5:
        raise ConfigError(f"{where}.attestation_ttl: at least 5 seconds")
    timeout = float(_want(raw.get("timeout", 600.0), (int, float), where + ".timeout"))
    cap_field = _want(raw.get("max_tokens_field", "max_tokens"), str,
                      where + ".max_tokens_field")
    if cap_field not in ("max_tokens", "max_completion_tokens"):
        raise ConfigError(f"{where}.max_tokens_field: 'max_tokens' or 'max_completion_tokens'")
    after = _want(raw.get("verify_after_delivery", False), bool,
                  where + ".verify_after_delivery")
    if after and platform.signatures != "endpoint":
        raise ConfigError(f"{where}.verify_after_delivery: only for providers whose signatures "
                          f"come from an endpoint (platform {platform.name}: signatures "
                          f"{platform.signatures!r})")
    return ProviderConfig(
        id=pid, platform=platform, base_url=base_url, models=models, api_key=api_key,
        prices=_prices(raw.get("prices", {}), models, where + ".prices"), policy=policy,
        development=development,
        trust_cap=parse_trust(_want(cap, str, where + ".trust_cap"), field=where + ".trust_cap")
        if cap is not None else None,
        attestation_ttl=ttl, timeout=timeout, max_tokens_field=cap_field,
        verify_after_delivery=after,
        responses_api=_want(raw.get("responses_api", False), bool, where + ".responses_api"),
    )


def _model_policies(data: Any, base: Path) -> dict[str, Policy]:
    """``[models."NAME"]`` tables: ``policy = "FILE"`` or ``policy_inline = {…}``."""
    out: dict[str, Policy] = {}
    for name, raw in _want(data, dict, "models").items():
        where = f"models.{json.dumps(name)}"
        _want(raw, dict, where)
        _only(raw, {"policy", "policy_inline"}, where)
        if not raw:
            raise ConfigError(f"{where}: give policy = \"FILE\" (or policy_inline)")
        out[name] = _policy(raw, where, base, development=False)
    return out


def _with_model_policies(p: ProviderConfig, policies: Mapping[str, Policy]) -> ProviderConfig:
    """A model's policy as it applies to provider ``p``: its pins, with ``p``'s roots of
    trust added (the provider's policy decides which roots it may rest on, and must accept
    too) and, for a development provider, the development roots and OS."""
    if p.policy is None:
        return p
    mine = {}
    for name, mp in policies.items():
        if name not in p.models:
            continue
        r, own = mp.roots, p.policy.roots
        mp = mp.with_roots(intel=_union(r.intel, own.intel), amd=_union(r.amd, own.amd),
                           nvidia=_union(r.nvidia, own.nvidia),
                           nvidia_rim=_union(r.nvidia_rim, own.nvidia_rim))
        if p.development:
            from teegate.sim import development_policy

            mp = development_policy(base=mp)
        mine[name] = mp
    return replace(p, model_policies=mine) if mine else p


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return a + tuple(x for x in b if x not in a)


def _agent(raw: Any, i: int, default: TrustLevel) -> AgentConfig:
    where = f"agents[{i}]"
    _want(raw, dict, where)
    _only(raw, {"id", "trust", "min_trust", "owner"}, where)
    if "id" not in raw:
        raise ConfigError(f"{where}.id: missing")
    trust = parse_trust(_want(raw["trust"], str, where + ".trust"), field=where + ".trust"
                        ) if "trust" in raw else default
    floor = parse_trust(_want(raw.get("min_trust", "standard"), str, where + ".min_trust"),
                        field=where + ".min_trust")
    owner = raw.get("owner")
    return AgentConfig(_want(raw["id"], str, where + ".id"), max(trust, floor), floor,
                       _want(owner, str, where + ".owner") if owner is not None else None)


_GATEWAY_FIELDS = {"listen", "database_url", "data_dir", "admin_key_env", "default_trust",
                   "prefer", "max_body_bytes", "max_response_bytes", "quarantine_seconds",
                   "cooldown_seconds",
                   "allowed_fails", "state_poll_seconds", "default_max_tokens", "currency",
                   "log_origin", "receipts", "ledger", "ledger_durability",
                   "ledger_expire_seconds", "hold_seconds", "replay_window_seconds",
                   "header_timeout_seconds", "body_timeout_seconds", "keep_alive_seconds",
                   "max_connections", "auth_fail_limit",
                   "auth_fail_window_seconds", "public_provider_details", "public_metrics",
                   "tee", "cors_origins", "responses_retention_seconds"}


def _cors(value: Any) -> tuple[str, ...]:
    """Origins as browsers send them (``https://app.example.com``, no path), or ``*``."""
    origins = _want(value, list, "gateway.cors_origins")
    for o in origins:
        ok = isinstance(o, str) and (o == "*" or (
            o.startswith(("http://", "https://")) and "/" not in o.split("://", 1)[1]
            and o.isprintable() and " " not in o))
        if not ok:
            raise ConfigError(f"gateway.cors_origins: {o!r} is not an origin "
                              "(scheme://host[:port], no path) or '*'")
    return tuple(origins)


def _durability(value: Any) -> str:
    text = _want(value, str, "gateway.ledger_durability")
    if text not in ("full", "strict", "normal"):
        raise ConfigError("gateway.ledger_durability: 'full' (money movements survive power "
                          "loss; holds are fsync'd with them), 'strict' (every commit fsync'd) "
                          "or 'normal' (survives a killed process, not power loss)")
    return str(text)


def _collateral(raw: dict[str, Any], base: Path) -> CollateralConfig:
    _only(raw, {"online", "pccs_url", "kds_url", "nvidia_ocsp_url", "nvidia_rim_url",
                "cache_dir"}, "collateral")
    urls = {}
    for name in ("pccs_url", "kds_url", "nvidia_ocsp_url", "nvidia_rim_url"):
        url = _want(raw.get(name, ""), str, f"collateral.{name}")
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"collateral.{name}: {url!r} is not an http(s) URL")
        urls[name] = url
    cache = raw.get("cache_dir")
    return CollateralConfig(
        online=_want(raw.get("online", True), bool, "collateral.online"),
        pccs_url=urls["pccs_url"], kds_url=urls["kds_url"],
        nvidia_ocsp_url=urls["nvidia_ocsp_url"], nvidia_rim_url=urls["nvidia_rim_url"],
        cache_dir=(base / Path(_want(cache, str, "collateral.cache_dir")).expanduser())
        if cache is not None else None)


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> GatewayConfig:
    """Build a GatewayConfig from parsed TOML; ConfigError naming the field otherwise."""
    base = base_dir or Path.cwd()
    _only(data, {"gateway", "providers", "agents", "collateral", "models", "chain", "x402"},
          "config")
    gw = _want(data.get("gateway", {}), dict, "gateway")
    _only(gw, _GATEWAY_FIELDS, "gateway")
    listen = _want(gw.get("listen", "127.0.0.1:8080"), str, "gateway.listen")
    host, _, port_s = listen.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ConfigError(f"gateway.listen: {listen!r} is not host:port")
    data_dir = Path(_want(gw["data_dir"], str, "gateway.data_dir")).expanduser() if (
        "data_dir" in gw) else paths.data_dir()
    db = _want(gw.get("database_url", paths.default_database_url(data_dir)), str,
               "gateway.database_url")
    if not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError("gateway.database_url: use sqlite:///PATH or postgresql://...")
    admin = _admin_key(gw["admin_key_env"]) if "admin_key_env" in gw else None
    prefer = _want(gw.get("prefer", "price"), str, "gateway.prefer")
    if prefer not in ("price", "latency"):
        raise ConfigError("gateway.prefer: 'price' or 'latency'")
    ids: set[str] = set()
    providers = []
    for i, raw in enumerate(_want(data.get("providers", []), list, "providers")):
        p = _provider(raw, i, base, ids)
        ids.add(p.id)
        providers.append(p)
    if not providers:
        raise ConfigError("providers: configure at least one [[providers]] entry")
    model_policies = _model_policies(data.get("models", {}), base)
    for name in model_policies:
        if not any(name in p.models and p.policy is not None for p in providers):
            raise ConfigError(f"models.{json.dumps(name)}: no provider with attestation "
                              "evidence serves this model, so its policy would check nothing")
    providers = [_with_model_policies(p, model_policies) for p in providers]
    default_trust = parse_trust(_want(gw.get("default_trust", "standard"), str,
                                      "gateway.default_trust"), field="gateway.default_trust")
    agents = tuple(_agent(a, i, default_trust) for i, a in enumerate(
        _want(data.get("agents", []), list, "agents")))

    collateral = _collateral(_want(data.get("collateral", {}), dict, "collateral"), base)

    def num(name: str, default: Any, kind: type | tuple[type, ...] = int) -> Any:
        value = _want(gw.get(name, default), kind, f"gateway.{name}")
        if not math.isfinite(value) or value <= 0:  # TOML has nan and inf
            raise ConfigError(f"gateway.{name}: must be a finite number > 0, not {value}")
        return value

    default_max_tokens = num("default_max_tokens", 4096)
    if default_max_tokens > MAX_AMOUNT:  # as a request's own max_tokens (a 400 there)
        raise ConfigError(f"gateway.default_max_tokens: at most {MAX_AMOUNT}")
    currency = None
    if "currency" in gw:
        currency = _want(gw["currency"], str, "gateway.currency")
        known = [c.code for c in DEFAULT_CURRENCIES]
        if currency not in known:  # every priced call would fail at its hold
            raise ConfigError(f"gateway.currency: {currency!r} is not a currency of the "
                              f"ledger (it keeps {', '.join(known)})")

    return GatewayConfig(
        providers=tuple(providers), agents=agents, collateral=collateral,
        listen_host=host, listen_port=int(port_s),
        database_url=db, data_dir=data_dir, admin_key=admin,
        default_trust=default_trust,
        prefer=prefer, max_body_bytes=num("max_body_bytes", 4 * 1024 * 1024),
        max_response_bytes=num("max_response_bytes", 64 * 1024 * 1024),
        quarantine_s=num("quarantine_seconds", 300),
        cooldown_s=float(num("cooldown_seconds", 30, (int, float))),
        allowed_fails=num("allowed_fails", 3),
        state_poll_s=float(num("state_poll_seconds", 1.0, (int, float))),
        ledger_expire_s=float(num("ledger_expire_seconds", 60, (int, float))),
        hold_s=float(num("hold_seconds", 600, (int, float))),
        default_max_tokens=default_max_tokens,
        replay_window_s=num("replay_window_seconds", 300),
        currency=currency,
        log_origin=_want(gw.get("log_origin", "teegate.local/log"), str, "gateway.log_origin"),
        receipts=_want(gw.get("receipts", True), bool, "gateway.receipts"),
        ledger=_want(gw.get("ledger", True), bool, "gateway.ledger"),
        ledger_durability=_durability(gw.get("ledger_durability", "full")),
        limits=ServerLimits(
            header_timeout=float(num("header_timeout_seconds", 10, (int, float))),
            body_timeout=float(num("body_timeout_seconds", 30, (int, float))),
            keep_alive_timeout=float(num("keep_alive_seconds", 5, (int, float))),
            max_connections=num("max_connections", 1024)),
        auth_fail_limit=num("auth_fail_limit", 20),
        auth_fail_window_s=float(num("auth_fail_window_seconds", 60, (int, float))),
        public_provider_details=_want(gw.get("public_provider_details", False), bool,
                                      "gateway.public_provider_details"),
        public_metrics=_want(gw.get("public_metrics", False), bool, "gateway.public_metrics"),
        cors_origins=_cors(gw.get("cors_origins", [])),
        responses_retention_s=num("responses_retention_seconds", 30 * 86400),
        model_policies=model_policies,
        chain=_chain(data["chain"]) if "chain" in data else None,
        x402=_x402(data),
        tee=_gateway_tee(gw.get("tee", "none")),
    )


def _gateway_tee(value: Any) -> str:
    from teegate.gateway.self_attestation import GATEWAY_TEES

    text: str = _want(value, str, "gateway.tee")
    if text not in GATEWAY_TEES:
        raise ConfigError(f"gateway.tee: one of {', '.join(GATEWAY_TEES)}, not {text!r}")
    return text


def _x402(data: Mapping[str, Any]) -> X402Config | None:
    """[x402], which needs [chain] (its chain, token and receiver)."""
    if "x402" not in data:
        return None
    if "chain" not in data:
        raise ConfigError("x402: needs a [chain] section (chain id, token, receiver)")
    from teegate.x402.config import parse_x402

    return parse_x402(_want(data["x402"], dict, "x402"))


def _chain(raw: Any) -> ChainConfig:
    """[chain], imported only when present: the chain stack (eth-utils, coincurve) costs a
    gateway without channels nothing at start-up."""
    from teegate.chain.config import parse_chain

    return parse_chain(_want(raw, dict, "chain"))


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate ``teegate.toml``."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such configuration file (create one with `teegate init`)"
                          ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    return parse_config(data, base_dir=p.parent.resolve())


STARTER = '''\
# teegate.toml: the gateway, its providers and agents. Secrets never go in this file:
# name the environment variable that holds them (api_key_env, admin_key_env).

[gateway]
listen = "127.0.0.1:8080"
# database_url = "postgresql://teegate@db/teegate"  # default: teegate.db in data_dir
# data_dir = "~/.teegate"
admin_key_env = "TEEGATE_ADMIN_KEY"   # protects /admin/*; unset = admin API disabled;
#                                     # at least 32 characters (openssl rand -hex 32)
default_trust = "standard"            # standard < tee < attested < attested+gpu
prefer = "price"                      # among eligible providers: "price" or "latency"
# max_body_bytes = 4194304            # a request body
# max_response_bytes = 67108864       # a provider's answer; larger ones are a failed call
# header_timeout_seconds = 10        # a request's head must arrive within this (else 408)
# body_timeout_seconds = 30          # and its body within this after the head
# keep_alive_seconds = 5             # an idle connection between requests is closed
# max_connections = 1024             # per process; at the cap the longest-idle one is
#                                    # closed, or the newcomer gets 503 when all are busy
# quarantine_seconds = 300            # after a failed response signature or rejected evidence
# replay_window_seconds = 300         # NEAR-style signed answers: created within this of
#                                     # the call, and accepted once (replay protection)
# cooldown_seconds = 30               # after allowed_fails consecutive upstream failures
# allowed_fails = 3
# auth_fail_limit = 20                # failed key checks per client address at once, then
# auth_fail_window_seconds = 60       # 429 + Retry-After; this many forgiven per window
# public_provider_details = false     # /v1/providers: base URLs for anyone, not only the
#                                     # admin key (verdicts and keys are always public)
# public_metrics = false              # /metrics without the admin key
# cors_origins = []                    # browser agents' origins allowed (CORS), or ["*"]
# responses_retention_seconds = 2592000  # stored /v1/responses answers: 404 and purged after
# log_origin = "teegate.example.com/log"  # receipt log name (signed checkpoints)
# receipts = true                      # a signed receipt of every call in the log
# ledger = true                        # charge every call to the agent's wallet (holds)
# ledger_expire_seconds = 60          # release expired holds/conversations (crashed gateways)
# hold_seconds = 600                   # a crashed gateway's holds are released after this
# currency = "USD"                     # ledger currency of the prices below
# ledger_durability = "full"           # SQLite: "normal" = no fsync per commit (crash-safe,
#                                      # not power-loss-safe), lower latency per call

# Intel/AMD collateral for evidence that does not carry its own (hosted providers send bare
# quotes): fetched once, cached on disk until the collateral itself expires.
# [collateral]
# online = true
# pccs_url = "https://pccs.phala.network"  # or https://api.trustedservices.intel.com, a PCCS
# kds_url = "https://kdsintf.amd.com"
# nvidia_ocsp_url = "https://ocsp.ndis.nvidia.com/"  # asked when a policy sets
#                                                    # gpu.require_ocsp
# nvidia_rim_url = "https://rim.attestation.nvidia.com/v1/rim/"  # asked when a policy
#                                                    # sets gpu.require_rim
# cache_dir = "~/.teegate/collateral"

# A teegate node (or any private-ml-sdk style node): attested by its report API, every
# response signature checked. `development = true` trusts this installation's development
# roots (simulated TEEs): never in production.
[[providers]]
id = "node-1"
platform = "tee-node"
base_url = "http://127.0.0.1:8001/v1"
models = ["teegate-builtin"]
development = true
# policy = "policy.toml"              # see docs/policy.example.toml; default: production
# attestation_ttl = 600               # re-attest at least this often (seconds)
[providers.prices.teegate-builtin]
input = 100                           # smallest currency unit per 1,000,000 tokens
output = 300
# per_call = 0                        # flat, per call, in the smallest currency unit

# A hosted OpenAI-compatible provider (trust level "standard").
# [[providers]]
# id = "openai"
# platform = "open-ai"                # open-ai, x, mistral, deepseek, libert-ai, ollama,
#                                     # tee-libert-ai, tee-near-ai, tee-phala, tee-node
# api_key_env = "OPENAI_API_KEY"
# models = ["gpt-4o-mini"]

# What must run for a model name, on every provider serving it (beside each provider's own
# policy): compose hashes, image digests, weights, OS images. Print one from a node with
# `teegate policy learn --url http://127.0.0.1:8001 --policy FILE` and review it.
# [models."teegate-builtin"]
# policy = "teegate-builtin.toml"

# Agents: default trust level and a floor no request can go below. Keys are created with
# `teegate agents create ID` (stored hashed).
# [[agents]]
# id = "research-bot"
# trust = "attested"
# min_trust = "tee"
# owner = "alice"
'''
