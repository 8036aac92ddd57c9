"""The schema as a client sees it, document-level errors, limits, masking, GraphiQL."""

import logging
from typing import Any

import httpx
import pytest
from graphql import build_schema, get_introspection_query, graphql_sync

from app.core.config import Settings
from app.services import devices
from tests.integration.graphql.client import GraphQLClient, code_of, make_settings

# SPEC section 6 and seed section 1.4, verbatim, plus the allowed additions (User.isActive,
# updateUser and its input, devicesCount, Device.metrics and Device.latest,
# TelemetryPoint.metricName for subscribers; seed section 3.3 with AlertRule.expression
# and validateRule, testRule and alertTriggered (with optional filters) from the alerts
# issue, Alert.ruleId, Alert.resolution and Alert.notifications, AlertRule's
# metricName/condition/threshold nullable because they are derived from the expression; seed
# section 4.2 with the commands issue's deviceCommands, command, cancelCommand,
# updateDeviceConfig, Device.config, CommandStatus.CANCELLED and the Command fields after
# `error`; issue 12's optional `limit`/`offset` on the lists that had none, and
# RuleTestResult's `truncated`/`replayedUntil`; issue 14's `correlationId` on Alert and
# Command): a client
# generated from this contract must keep working
CONTRACT = """
scalar JSON
enum Role { ADMIN OPERATOR VIEWER }
enum DeviceStatus { ONLINE OFFLINE UNKNOWN }
type User { id: ID! email: String! name: String role: Role! createdAt: String!
  isActive: Boolean! }
type AuthPayload { token: String! user: User! }
type Device { id: ID! name: String! type: String! status: DeviceStatus!
  metadata: JSON lastSeenAt: String createdAt: String! updatedAt: String!
  metrics: [String!]! latest(metricName: String!): TelemetryPoint config: JSON
  credentials: [DeviceCredentialInfo!]! rateLimitedAt: String }
enum CredentialKind { PASSWORD CERTIFICATE }
type DeviceCredentials { username: String! password: String certificatePem: String
  privateKeyPem: String caCertificatePem: String! }
type DeviceCredentialInfo { kind: CredentialKind! createdAt: String! fingerprint: String!
  expiresAt: String }
type DeviceTypeSettings { type: String! rateLimit: String rateBurst: Int
  effectiveRateLimit: String! effectiveRateBurst: Int! }
type TelemetryPoint { time: String! value: Float! unit: String metricName: String }
type TelemetrySeries { metricName: String! points: [TelemetryPoint!]! }
type TelemetryAggregation { bucket: String! avg: Float! min: Float! max: Float! count: Int! }
type DeleteResult { success: Boolean! id: ID! }
input CreateDeviceInput { name: String! type: String! metadata: JSON }
input UpdateDeviceInput { id: ID! name: String type: String metadata: JSON }
input UpdateUserInput { id: ID! name: String role: Role isActive: Boolean password: String }
type Query { me: User! devices(type: String, status: DeviceStatus, search: String,
  limit: Int = 100, offset: Int = 0): [Device!]! device(id: ID!): Device
  users(limit: Int = 100, offset: Int = 0): [User!]!
  devicesCount(type: String, status: DeviceStatus, search: String): Int!
  deviceTelemetry(deviceId: ID!, metricName: String!, from: String!, to: String!,
    limit: Int = 1000): TelemetrySeries!
  deviceTelemetryAggregated(deviceId: ID!, metricName: String!, from: String!, to: String!,
    interval: String!): [TelemetryAggregation!]!
  deviceLatestMetric(deviceId: ID!, metricName: String!): TelemetryPoint
  deviceMetrics(deviceId: ID!, limit: Int = 100, offset: Int = 0): [String!]!
  activeAlerts(deviceId: ID, severity: AlertSeverity, limit: Int = 100, offset: Int = 0): [Alert!]!
  alertHistory(deviceId: ID, from: String!, to: String!, limit: Int = 100): [Alert!]!
  alertRules(deviceId: ID, limit: Int = 100, offset: Int = 0): [AlertRule!]!
  validateRule(expression: String!): [RuleDiagnostic!]!
  testRule(expression: String!, from: String!, to: String!, deviceIds: [ID!]): [RuleTestResult!]!
  deviceCommands(deviceId: ID!, status: CommandStatus, limit: Int = 50,
    offset: Int = 0): [Command!]!
  command(id: ID!): Command
  deviceTypeSettings(type: String!): DeviceTypeSettings!
  dashboards(limit: Int = 100, offset: Int = 0): [Dashboard!]!
  dashboard(id: ID!): Dashboard }
enum DashboardVisibility { PRIVATE SHARED }
type Dashboard { id: ID! name: String! description: String visibility: DashboardVisibility!
  spec: JSON! createdAt: String! updatedAt: String! provisioned: Boolean! owner: User }
input CreateDashboardInput { name: String! description: String visibility: DashboardVisibility
  spec: JSON }
input UpdateDashboardInput { id: ID! name: String description: String
  visibility: DashboardVisibility spec: JSON }
type Mutation { login(email: String!, password: String!): AuthPayload!
  createDevice(input: CreateDeviceInput!): Device!
  updateDevice(input: UpdateDeviceInput!): Device!
  deleteDevice(id: ID!): DeleteResult!
  createUser(email: String!, password: String!, role: Role!, name: String): User!
  updateUser(input: UpdateUserInput!): User!
  createAlertRule(input: CreateAlertRuleInput!): AlertRule!
  updateAlertRule(input: UpdateAlertRuleInput!): AlertRule!
  deleteAlertRule(id: ID!): DeleteResult!
  acknowledgeAlert(id: ID!): Alert!
  resolveAlert(id: ID!, message: String): Alert!
  sendCommand(input: SendCommandInput!): Command!
  cancelCommand(id: ID!): Command!
  updateDeviceConfig(deviceId: ID!, config: JSON!): Device!
  issueDeviceCredentials(deviceId: ID!, kind: CredentialKind!): DeviceCredentials!
  revokeDeviceCredentials(deviceId: ID!): Device!
  updateDeviceTypeSettings(type: String!, rateLimit: String, rateBurst: Int): DeviceTypeSettings!
  createDashboard(input: CreateDashboardInput!): Dashboard!
  updateDashboard(input: UpdateDashboardInput!): Dashboard!
  deleteDashboard(id: ID!): DeleteResult!
  importDashboard(spec: JSON!, visibility: DashboardVisibility): Dashboard! }
enum AlertSeverity { INFO WARNING CRITICAL }
enum AlertStatus { ACTIVE ACKNOWLEDGED RESOLVED }
type Alert { id: ID! deviceId: ID! device: Device severity: AlertSeverity! status: AlertStatus!
  title: String! message: String metricName: String metricValue: Float threshold: Float
  triggeredAt: String! acknowledgedAt: String resolvedAt: String ruleId: ID resolution: String
  notifications: [NotificationDelivery!]! correlationId: String }
type NotificationDelivery { id: ID! channel: String! target: String! status: String!
  attempts: Int! lastError: String nextAttemptAt: String createdAt: String! updatedAt: String! }
type AlertRule { id: ID! name: String! description: String deviceId: ID deviceType: String
  metricName: String condition: String threshold: Float severity: AlertSeverity!
  enabled: Boolean! cooldownMinutes: Int! expression: String! }
input CreateAlertRuleInput { name: String description: String deviceId: ID deviceType: String
  metricName: String condition: String threshold: Float severity: AlertSeverity
  enabled: Boolean cooldownMinutes: Int expression: String }
input UpdateAlertRuleInput { id: ID! name: String description: String deviceId: ID
  deviceType: String metricName: String condition: String threshold: Float
  severity: AlertSeverity enabled: Boolean cooldownMinutes: Int expression: String }
enum DiagnosticSeverity { ERROR WARNING }
type RuleDiagnostic { line: Int! column: Int! message: String! severity: DiagnosticSeverity! }
type RuleFiring { firedAt: String! clearedAt: String value: Float }
type RuleTestResult { deviceId: ID! deviceName: String! metricName: String
  firings: [RuleFiring!]! truncated: Boolean! replayedUntil: String! firedCount: Int! }
enum DeviceEventType { CREATED UPDATED DELETED STATUS_CHANGED }
type DeviceEvent { type: DeviceEventType! device: Device! timestamp: String! }
enum CommandStatus { PENDING SENT ACKNOWLEDGED EXECUTED FAILED EXPIRED CANCELLED }
type Command { id: ID! deviceId: ID! action: String! params: JSON status: CommandStatus!
  sentAt: String! acknowledgedAt: String executedAt: String error: String
  createdAt: String! updatedAt: String! expiresAt: String! result: JSON idempotencyKey: String
  createdBy: ID ruleId: ID alertId: ID correlationId: String }
input SendCommandInput { deviceId: ID! action: String! params: JSON timeoutSeconds: Int = 300
  idempotencyKey: String }
type Subscription { deviceUpdated(deviceId: ID): Device!
  telemetryReceived(deviceId: ID!): TelemetryPoint!
  deviceEvents(deviceIds: [ID!]): DeviceEvent!
  alertTriggered(deviceId: ID, severity: AlertSeverity): Alert!
  commandStatusChanged(commandId: ID!): Command! }
"""


@pytest.fixture
def settings(database_url: str) -> Settings:
    """This module reads the schema by introspection and opens GraphiQL: both allowed."""
    return make_settings(database_url, graphql_introspection=True)


def _ref(type_ref: dict[str, Any]) -> str:
    if type_ref["kind"] == "NON_NULL":
        return _ref(type_ref["ofType"]) + "!"
    if type_ref["kind"] == "LIST":
        return f"[{_ref(type_ref['ofType'])}]"
    return type_ref["name"]


def _shapes(introspection: dict[str, Any]) -> dict[str, Any]:
    """Each user-defined type as names, types and defaults only (descriptions ignored)."""
    shapes: dict[str, Any] = {}
    for kind in introspection["__schema"]["types"]:
        if kind["name"].startswith("__") or kind["name"] in {"String", "Boolean", "Int", "ID"}:
            continue
        members = kind["fields"] or kind["inputFields"] or []
        shapes[kind["name"]] = {
            "kind": kind["kind"],
            "enum": [value["name"] for value in kind["enumValues"] or []],
            "fields": {
                member["name"]: (
                    _ref(member["type"]),
                    member.get("defaultValue"),
                    {
                        a["name"]: (_ref(a["type"]), a["defaultValue"])
                        for a in member.get("args", [])
                    },
                )
                for member in members
            },
        }
    return shapes


async def test_schema_matches_the_contract_exactly(api: GraphQLClient) -> None:
    served = await api.data(get_introspection_query())  # introspection needs no token
    expected = graphql_sync(build_schema(CONTRACT), get_introspection_query())
    assert expected.errors is None
    assert _shapes(served) == _shapes(expected.data)


async def test_document_errors_have_their_own_codes(api: GraphQLClient, viewer: str) -> None:
    parse = await api.error("{ devices { id ", token=viewer)
    assert code_of(parse) == "GRAPHQL_PARSE_FAILED"
    unknown = await api.error("{ devices { id serial } }", token=viewer)
    assert code_of(unknown) == "GRAPHQL_VALIDATION_FAILED"
    assert "serial" in unknown["message"]
    argument = await api.error("{ devices(color: RED) { id } }", token=viewer)
    assert code_of(argument) == "GRAPHQL_VALIDATION_FAILED"


async def test_too_deep_a_query_is_refused_before_running(api: GraphQLClient, viewer: str) -> None:
    nested = "{ me { " + "a { " * 12 + "b" + " }" * 12 + " } }"
    body = await api.post(nested, token=viewer)
    assert body["data"] is None
    depth = [error for error in body["errors"] if "maximum operation depth" in error["message"]]
    assert depth and code_of(depth[0]) == "GRAPHQL_VALIDATION_FAILED"
    assert all(code_of(error) == "GRAPHQL_VALIDATION_FAILED" for error in body["errors"])


async def test_error_body_shape(api: GraphQLClient, viewer: str) -> None:
    body = await api.post('{ device(id: "nope") { id } }', token=viewer)
    assert body == {
        "data": {"device": None},
        "errors": [
            {
                "message": "id: 'nope' is not a valid id (UUID)",
                "locations": [{"line": 1, "column": 3}],
                "path": ["device"],
                "extensions": {"code": "BAD_USER_INPUT", "field": "id"},
            }
        ],
    }


async def test_unexpected_errors_are_logged_and_masked(
    api: GraphQLClient,
    viewer: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(**_kwargs: object) -> None:
        raise RuntimeError("password=hunter2 in a connection string")

    monkeypatch.setattr(devices, "list_devices", broken)
    with caplog.at_level(logging.ERROR, logger="app.graphql.errors"):
        error = await api.error("{ devices { id } }", token=viewer)
    assert error["message"] == "internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert "hunter2" not in str(error)
    [record] = [r for r in caplog.records if r.name == "app.graphql.errors"]
    assert record.exc_info and "hunter2" in str(record.exc_info[1])
    # bad input is the client's problem, not an ERROR in our logs
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await api.error('{ device(id: "nope") { id } }', token=viewer)
    assert not caplog.records


async def test_graphiql_is_served_to_browsers(api: GraphQLClient) -> None:
    response = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_queries_also_work_over_get(api: GraphQLClient, viewer: str) -> None:
    response = await api.http.get(
        "/graphql",
        params={"query": "{ me { role } }"},
        headers={"Authorization": f"Bearer {viewer}", "Accept": "application/json"},
    )
    assert response.json() == {"data": {"me": {"role": "VIEWER"}}}
    assert isinstance(response, httpx.Response)
