import Auth
import EtcdProto
import EtcdServer
import Foundation
import Raft

/// The simulation's auth mode (about one seed in three, chosen by a
/// generator of its own so other seeds run as before). Through raft, under
/// the faults: users `root` (the root role), `writer` (readwrite on
/// [k1, l), and on k0 while root has granted it) and `reader` (read on
/// [k, l)); then auth is enabled. Clients act as root, writer or reader in
/// turn, their identity resolved on the member they ask (as the API layer
/// resolves a token), so a write can be checked before a permission change
/// and applied after it. Mid-run, root grants and revokes the writer's
/// permission on k0 again and again.
///
/// Check: no write got through without permission — never the reader's;
/// the writer's on k0 only while a grant may have been in force (between
/// a grant's proposal and the completion of the revoke after it).
final class AuthMode {
    static let users = ["root", "writer", "reader"]
    /// Some bcrypt hash (no password is compared in the simulation; the
    /// identity is what the API layer would resolve from a token).
    static let passwordHash = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"

    var setupSteps: [Etcdserverpb_InternalRaftRequest] = []
    /// When the enable was known applied: a write invoked later is after
    /// it in the log, so the applier checked it.
    var enabledAt: Int64?
    /// When the writer may have held k0: from a grant's proposal to the
    /// completion of the revoke after it (nil: still open).
    var k0Windows: [(from: Int64, to: Int64?)] = []
    var k0Granted = false
    var refused = 0
    var staleAtApply = 0
    var changes = 0
    var checkedWrites = 0
}

extension SimWorld {
    func startAuth() {
        var choice = SplitMix64(seed: options.seed &* 0xD6E8_FEB8_6659_FD93 &+ 0xA17)
        guard choice.next() % 3 == 0 else { return }
        let mode = AuthMode()
        mode.setupSteps = Self.authSetup()
        authMode = mode
        schedule(after: 50_000) { [self] in nextAuthStep() }
    }

    /// The requests that set up users, roles and grants, then enable auth.
    static func authSetup() -> [Etcdserverpb_InternalRaftRequest] {
        var steps: [Etcdserverpb_InternalRaftRequest] = []
        func step(_ build: (inout Etcdserverpb_InternalRaftRequest) -> Void) {
            var request = Etcdserverpb_InternalRaftRequest()
            build(&request)
            steps.append(request)
        }
        for user in AuthMode.users {
            step { $0.authUserAdd.name = user; $0.authUserAdd.hashedPassword = AuthMode.passwordHash }
        }
        step { $0.authUserGrantRole.user = "root"; $0.authUserGrantRole.role = "root" }
        for (role, type, key, end) in [("w", Authpb_Permission.TypeEnum.readwrite, "k1", "l"), ("r", .read, "k", "l")] {
            step { $0.authRoleAdd.name = role }
            step {
                $0.authRoleGrantPermission.name = role
                $0.authRoleGrantPermission.perm.permType = type
                $0.authRoleGrantPermission.perm.key = Data(key.utf8)
                $0.authRoleGrantPermission.perm.rangeEnd = Data(end.utf8)
            }
        }
        step { $0.authUserGrantRole.user = "writer"; $0.authUserGrantRole.role = "w" }
        step { $0.authUserGrantRole.user = "reader"; $0.authUserGrantRole.role = "r" }
        step { $0.authEnable = Etcdserverpb_AuthEnableRequest() }
        return steps
    }

    /// Submits the next setup step (as root once there is one); a step that
    /// failed with an unknown outcome or for want of a leader is retried
    /// ("already exists": it was applied before).
    func nextAuthStep() {
        guard let mode = authMode, !clientsStopped else { return }
        guard let step = mode.setupSteps.first else {
            mode.enabledAt = now
            log("auth enabled")
            scheduleK0Change()
            return
        }
        guard let member = pickNode()?.member else { return schedule(after: 100_000) { [self] in nextAuthStep() } }
        let info = member.auth.isEnabled ? AuthInfo(username: "root", revision: member.auth.revision) : nil
        submit(step, on: member, auth: info) { [self] result in
            switch result {
            case .success:
                mode.setupSteps.removeFirst()
            case .failure(let error as EtcdError) where error.code == .failedPrecondition && error.message.hasSuffix("already exists"):
                mode.setupSteps.removeFirst()
            case .failure:
                break
            }
            schedule(after: 20_000) { [self] in nextAuthStep() }
        }
    }

    /// Every 0.5–2 s, root grants or revokes the writer's k0.
    func scheduleK0Change() {
        schedule(after: random.int(500_000...2_000_000)) { [self] in
            guard let mode = authMode, !clientsStopped else { return }
            guard let member = pickNode()?.member else { return scheduleK0Change() }
            let grant = !mode.k0Granted
            var request = Etcdserverpb_InternalRaftRequest()
            if grant {
                request.authRoleGrantPermission.name = "w"
                request.authRoleGrantPermission.perm.permType = .readwrite
                request.authRoleGrantPermission.perm.key = Data("k0".utf8)
                // A grant may take effect from its proposal on.
                if mode.k0Windows.last.map({ $0.to != nil }) ?? true { mode.k0Windows.append((now, nil)) }
            } else {
                request.authRoleRevokePermission.role = "w"
                request.authRoleRevokePermission.key = Data("k0".utf8)
            }
            let info = AuthInfo(username: "root", revision: member.auth.revision)
            submit(request, on: member, auth: info) { [self] result in
                if case .success = result {
                    mode.changes += 1
                    mode.k0Granted = grant
                    // Only a revoke known to be applied closes the window.
                    if !grant, let last = mode.k0Windows.indices.last, mode.k0Windows[last].to == nil { mode.k0Windows[last].to = now }
                } else if case .failure(let error as EtcdError) = result, !grant, error == EtcdError(AuthError.permissionNotGranted) {
                    mode.k0Granted = false
                    if let last = mode.k0Windows.indices.last, mode.k0Windows[last].to == nil { mode.k0Windows[last].to = now }
                }
                scheduleK0Change()
            }
        }
    }

    /// The identity client `c` acts as on `member` (nil without auth mode).
    func authIdentity(client c: Int, on member: Member) -> AuthInfo? {
        guard authMode != nil else { return nil }
        return AuthInfo(username: AuthMode.users[c % AuthMode.users.count], revision: member.auth.revision)
    }

    /// Root, once auth is enabled on `member` (nil otherwise).
    func rootIdentity(on member: Member) -> AuthInfo? {
        guard authMode != nil, member.auth.isEnabled else { return nil }
        return AuthInfo(username: "root", revision: member.auth.revision)
    }

    /// The errors the applier's auth check answers with (nothing applied).
    static func isAuthRefusal(_ error: EtcdError) -> Bool {
        [EtcdError(AuthError.permissionDenied), EtcdError(AuthError.userEmpty), EtcdError(AuthError.oldRevision)].contains(error)
    }

    func countAuthRefusal(_ error: EtcdError) {
        guard let mode = authMode else { return }
        if error == EtcdError(AuthError.permissionDenied) || error == EtcdError(AuthError.userEmpty) { mode.refused += 1 }
        if error == EtcdError(AuthError.oldRevision) { mode.staleAtApply += 1 }
    }

    /// A write `user` got through: it must have been permitted.
    func checkPermitted(_ request: Etcdserverpb_InternalRaftRequest, as user: String, invoke: Int64) {
        guard let mode = authMode, let enabledAt = mode.enabledAt, invoke > enabledAt else { return }
        var written: [Data] = []
        if request.hasPut { written.append(request.put.key) }
        if request.hasDeleteRange { written.append(request.deleteRange.key) }
        if request.hasTxn {
            for op in request.txn.success + request.txn.failure {
                if case .requestPut(let put)? = op.request { written.append(put.key) }
                if case .requestDeleteRange(let delete)? = op.request { written.append(delete.key) }
            }
        }
        guard !written.isEmpty else { return }
        mode.checkedWrites += 1
        for key in written.map({ String(decoding: $0, as: UTF8.self) }) {
            switch user {
            case "root": continue
            case "writer" where key == "k0":
                let overlaps = mode.k0Windows.contains { window in window.from <= now && (window.to ?? .max) >= invoke }
                if !overlaps { violation("auth: writer wrote k0 (invoked \(invoke / 1000) ms, done \(now / 1000) ms) with no grant in force") }
            case "writer" where key >= "k1" && key < "l":
                continue
            default:
                violation("auth: \(user) wrote \(key) (invoked \(invoke / 1000) ms) without permission")
            }
        }
    }

    func checkAuth() {
        guard let mode = authMode else { return }
        report.auth = "\(mode.enabledAt == nil ? "setting up" : "enabled"), \(mode.refused) writes refused, "
            + "\(mode.staleAtApply) stale at apply, \(mode.changes) grant changes, \(mode.checkedWrites) writes checked"
    }
}
