import Auth
import Dispatch
import EtcdProto
import Foundation
import Locks

/// Authentication and RBAC at the member: who a request is
/// (`authInfo(token:commonName:)`), the checks the API layer runs before
/// serving a read or an admin call, and the Auth service's RPCs. Changes
/// go through raft with the caller in the entry's header, so every member
/// applies them and re-checks them (`Applier+Auth.swift`). Passwords are
/// hashed and compared here, off the raft loop, before anything is proposed.
extension Member {
    // MARK: - Identity

    /// The user a request acts as, decided in one place: the simple token
    /// from the `token` metadata when there is one (unknown or expired:
    /// "invalid auth token", as etcd, even with auth disabled), else the
    /// verified client certificate's Common Name when the TLS listener
    /// passes one, else nobody (nil). The revision is the store's now.
    public func authInfo(token: String?, commonName: String?) throws(EtcdError) -> AuthInfo? {
        if let token {
            guard let info = tokenInfo(token) else { throw EtcdError(AuthError.invalidToken) }
            return info
        }
        if let commonName, !commonName.isEmpty, auth.isEnabled {
            return AuthInfo(username: commonName, revision: auth.revision)
        }
        return nil
    }

    /// The user a simple token names (renewing it), at the store's
    /// revision; with JWT, the user and revision a valid token carries.
    private func tokenInfo(_ token: String) -> AuthInfo? {
        if let jwt {
            return jwt.verify(token).map { AuthInfo(username: $0.username, revision: $0.revision) }
        }
        guard SimpleTokens.isWellFormed(token), let user = tokens.user(for: token, now: leaseClock.now()) else { return nil }
        return AuthInfo(username: user, revision: auth.revision)
    }

    /// Whether requests need checking at all: false while auth is disabled
    /// (the API layer then skips the checks and reads no metadata).
    public var isAuthEnabled: Bool { auth.isEnabled }

    // MARK: - Checks the API layer runs

    /// A Range: read permission on its key or range.
    public func authorize(_ request: Etcdserverpb_RangeRequest, as info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in try auth.check(info, .read, key: Array(request.key), rangeEnd: Array(request.rangeEnd)) }
    }

    /// A txn: every compare and op, as the applier checks a written one.
    public func authorize(_ request: Etcdserverpb_TxnRequest, as info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in
            guard auth.isEnabled else { return }
            try Applier.authorize(request, as: info, auth)
        }
    }

    /// A watch: read permission on the watched key or range.
    public func authorizeWatch(key: Data, rangeEnd: Data, as info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in try auth.check(info, .read, key: Array(key), rangeEnd: Array(rangeEnd)) }
    }

    /// Root only: compaction, maintenance and membership changes (etcd's
    /// IsAdminPermitted; passes while auth is disabled).
    public func authorizeAdmin(_ info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in try auth.checkAdmin(info) }
    }

    /// As `authorizeAdmin`, for a call from `token`, answering as etcd's
    /// Maintenance service does: the auth store's error unconverted
    /// (UNKNOWN, "auth: permission denied"), a bad token included.
    public func authorizeMaintenance(token: String?, commonName: String? = nil) throws(EtcdError) {
        do {
            var info: AuthInfo?
            if let token {
                info = tokenInfo(token)
                if info == nil { throw AuthError.invalidToken }
            } else if let commonName, !commonName.isEmpty, auth.isEnabled {
                info = AuthInfo(username: commonName, revision: auth.revision)
            }
            try auth.checkAdmin(info)
        } catch let error as AuthError {
            throw EtcdError(unconverted: error)
        } catch {
            throw EtcdError(.internal, "\(error)")
        }
    }

    /// LeaseTimeToLive with keys: write permission on every attached key.
    public func authorizeLeaseKeys(_ id: Int64, as info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in
            for key in lessor.timeToLive(id: id, now: leaseNow())?.keys ?? [] {
                try auth.check(info, .write, key: Array(key), rangeEnd: [])
            }
        }
    }

    /// After a read checked as `info`: the auth store must not have changed
    /// meanwhile (etcd's doSerialize), or the read is refused as stale.
    public func checkAuthRevision(_ info: AuthInfo?) throws(EtcdError) {
        if let info, info.revision != 0, info.revision != auth.revision { throw EtcdError(AuthError.oldRevision) }
    }

    /// The proposer's early check: what the applier would refuse is refused
    /// before it costs a raft round.
    func authorize(_ request: ProposedRequest, as info: AuthInfo?) throws(EtcdError) {
        try mapped { () throws(AuthError) in
            try Applier.authorize(request, as: info, auth, leaseKeys: { [lessor, leaseClock] in
                lessor.timeToLive(id: $0, now: leaseClock.now())?.keys ?? []
            }, atApply: false)
        }
    }

    private func mapped(_ body: () throws(AuthError) -> Void) throws(EtcdError) {
        do { try body() } catch { throw EtcdError(error) }
    }

    // MARK: - The Auth service

    public func authEnable(as info: AuthInfo?) async throws -> Etcdserverpb_AuthEnableResponse {
        try await proposeAuth(Etcdserverpb_AuthEnableResponse(), as: info) { $0.authEnable = Etcdserverpb_AuthEnableRequest() }
    }

    public func authDisable(as info: AuthInfo?) async throws -> Etcdserverpb_AuthDisableResponse {
        try await proposeAuth(Etcdserverpb_AuthDisableResponse(), as: info) { $0.authDisable = Etcdserverpb_AuthDisableRequest() }
    }

    /// AuthStatus: open to everyone, as in etcd.
    public func authStatus() async throws -> Etcdserverpb_AuthStatusResponse {
        try await linearizableBarrier()
        var response = withHeader(Etcdserverpb_AuthStatusResponse())
        response.enabled = auth.isEnabled
        response.authRevision = auth.revision
        return response
    }

    /// Authenticate, as etcd: after a read barrier, compare the password
    /// (bcrypt, off the raft loop) against the stored hash, then propose
    /// the token so every member knows it (with JWT: then sign one). When
    /// the auth store changed while the password was compared, compare
    /// again (at most a few times). `client` (the caller's address) is
    /// charged the bcrypt time its attempts take (`BcryptBudget`).
    public func authenticate(_ request: Etcdserverpb_AuthenticateRequest, client: String? = nil) async throws -> Etcdserverpb_AuthenticateResponse {
        try await linearizableBarrier()
        for _ in 0..<3 {
            let stored: (hash: Data, revision: UInt64)
            do { stored = try auth.passwordHash(of: request.name) } catch { throw EtcdError(error) }
            let ticket = try bcryptBudget.admit(client, now: leaseClock.now())
            let (matches, seconds) = try await passwordWork.run { () -> (Bool, Double) in
                let start = ContinuousClock.now
                let matches = Passwords.matches(request.password, hash: stored.hash)
                let spent = ContinuousClock.now - start
                return (matches, Double(spent.components.seconds) + Double(spent.components.attoseconds) / 1e18)
            }
            bcryptBudget.charge(ticket, seconds: seconds, now: leaseClock.now())
            guard matches else {
                logger.info("invalid password", metadata: ["user-name": "\(request.name)"])
                throw EtcdError(AuthError.authFailed)
            }
            if jwt?.verifyOnly == true { throw EtcdError(unconverted: AuthError.verifyOnly) }
            var internalRequest = Etcdserverpb_InternalRaftRequest()
            internalRequest.authenticate.name = request.name
            // With JWT the entry assigns nothing; the token is signed below.
            if jwt == nil {
                var bits = RandomBits(source: environment.randomBits)
                internalRequest.authenticate.simpleToken = SimpleTokens.makePrefix(using: &bits)
            }
            guard case var .authenticate(response) = try await propose(.other(internalRequest)) else {
                throw EtcdError(.internal, "unexpected apply result")
            }
            if stored.revision == auth.revision {
                if let jwt {
                    do { response.token = try await jwt.sign(username: request.name, revision: stored.revision) } catch { throw EtcdError(error) }
                }
                response.header = header()
                return response
            }
        }
        throw EtcdError(AuthError.oldRevision)
    }

    public func userAdd(_ request: Etcdserverpb_AuthUserAddRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserAddResponse {
        try authorizeAdmin(info)
        var add = request
        if !add.options.noPassword && add.hashedPassword.isEmpty {
            add.hashedPassword = try await hashed(add.password)
        }
        // The clear password never enters the log.
        add.password = ""
        return try await proposeAuth(Etcdserverpb_AuthUserAddResponse(), as: info) { $0.authUserAdd = add }
    }

    public func userDelete(_ request: Etcdserverpb_AuthUserDeleteRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserDeleteResponse {
        return try await proposeAuth(Etcdserverpb_AuthUserDeleteResponse(), as: info) { $0.authUserDelete = request }
    }

    public func userChangePassword(_ request: Etcdserverpb_AuthUserChangePasswordRequest,
                                   as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserChangePasswordResponse {
        try authorizeAdmin(info)
        var change = request
        if change.hashedPassword.isEmpty {
            change.hashedPassword = try await hashed(change.password)
        }
        change.password = ""
        return try await proposeAuth(Etcdserverpb_AuthUserChangePasswordResponse(), as: info) { $0.authUserChangePassword = change }
    }

    public func userGrantRole(_ request: Etcdserverpb_AuthUserGrantRoleRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserGrantRoleResponse {
        return try await proposeAuth(Etcdserverpb_AuthUserGrantRoleResponse(), as: info) { $0.authUserGrantRole = request }
    }

    public func userRevokeRole(_ request: Etcdserverpb_AuthUserRevokeRoleRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserRevokeRoleResponse {
        return try await proposeAuth(Etcdserverpb_AuthUserRevokeRoleResponse(), as: info) { $0.authUserRevokeRole = request }
    }

    public func roleAdd(_ request: Etcdserverpb_AuthRoleAddRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleAddResponse {
        return try await proposeAuth(Etcdserverpb_AuthRoleAddResponse(), as: info) { $0.authRoleAdd = request }
    }

    public func roleDelete(_ request: Etcdserverpb_AuthRoleDeleteRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleDeleteResponse {
        return try await proposeAuth(Etcdserverpb_AuthRoleDeleteResponse(), as: info) { $0.authRoleDelete = request }
    }

    public func roleGrantPermission(_ request: Etcdserverpb_AuthRoleGrantPermissionRequest,
                                    as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleGrantPermissionResponse {
        return try await proposeAuth(Etcdserverpb_AuthRoleGrantPermissionResponse(), as: info) { $0.authRoleGrantPermission = request }
    }

    public func roleRevokePermission(_ request: Etcdserverpb_AuthRoleRevokePermissionRequest,
                                     as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleRevokePermissionResponse {
        return try await proposeAuth(Etcdserverpb_AuthRoleRevokePermissionResponse(), as: info) { $0.authRoleRevokePermission = request }
    }

    /// UserGet: root, or the user asking about itself. Served after a read
    /// barrier from the applied store (etcd sends it through raft; the
    /// barrier gives the same linearizability without an entry).
    public func userGet(_ request: Etcdserverpb_AuthUserGetRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserGetResponse {
        try await linearizableBarrier()
        if (try? authorizeAdmin(info)) == nil && request.name != info?.username { try authorizeAdmin(info) }
        guard let user = auth.user(request.name) else { throw EtcdError(AuthError.userNotFound) }
        var response = withHeader(Etcdserverpb_AuthUserGetResponse())
        response.roles = user.roles
        return response
    }

    /// RoleGet: root, or a user holding the role.
    public func roleGet(_ request: Etcdserverpb_AuthRoleGetRequest, as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleGetResponse {
        try await linearizableBarrier()
        if (try? authorizeAdmin(info)) == nil && !auth.hasRole(user: info?.username ?? "", role: request.role) {
            try authorizeAdmin(info)
        }
        guard let role = auth.role(request.role) else { throw EtcdError(AuthError.roleNotFound) }
        var response = withHeader(Etcdserverpb_AuthRoleGetResponse())
        response.perm = role.keyPermission
        return response
    }

    public func userList(as info: AuthInfo?) async throws -> Etcdserverpb_AuthUserListResponse {
        try await linearizableBarrier()
        try authorizeAdmin(info)
        var response = withHeader(Etcdserverpb_AuthUserListResponse())
        response.users = auth.userNames()
        return response
    }

    public func roleList(as info: AuthInfo?) async throws -> Etcdserverpb_AuthRoleListResponse {
        try await linearizableBarrier()
        try authorizeAdmin(info)
        var response = withHeader(Etcdserverpb_AuthRoleListResponse())
        response.roles = auth.roleNames()
        return response
    }

    /// Proposes an Auth service change as `info` and waits for its apply.
    /// Proposes the auth change `set` writes into a raft request, as
    /// `info`; answers `response` with this member's header once applied.
    private func proposeAuth<Response: AuthResponse>(_ response: Response, as info: AuthInfo?,
                                                     _ set: (inout Etcdserverpb_InternalRaftRequest) -> Void) async throws -> Response {
        var request = Etcdserverpb_InternalRaftRequest()
        set(&request)
        _ = try await propose(.other(request), auth: info)
        return withHeader(response)
    }

    /// `password`'s bcrypt hash at --bcrypt-cost, made off the raft loop.
    private func hashed(_ password: String) async throws -> String {
        let cost = config.bcryptCost
        return String(decoding: try await passwordWork.run { Passwords.hash(password, cost: cost) }, as: UTF8.self)
    }

    private func withHeader<Response: AuthResponse>(_ response: Response) -> Response {
        var response = response
        response.header = header()
        return response
    }
}

/// The Auth service's responses, which all carry etcd's response header.
protocol AuthResponse {
    var header: Etcdserverpb_ResponseHeader { get set }
}

extension Etcdserverpb_AuthEnableResponse: AuthResponse {}
extension Etcdserverpb_AuthDisableResponse: AuthResponse {}
extension Etcdserverpb_AuthStatusResponse: AuthResponse {}
extension Etcdserverpb_AuthUserAddResponse: AuthResponse {}
extension Etcdserverpb_AuthUserDeleteResponse: AuthResponse {}
extension Etcdserverpb_AuthUserChangePasswordResponse: AuthResponse {}
extension Etcdserverpb_AuthUserGrantRoleResponse: AuthResponse {}
extension Etcdserverpb_AuthUserRevokeRoleResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleAddResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleDeleteResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleGrantPermissionResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleRevokePermissionResponse: AuthResponse {}
extension Etcdserverpb_AuthUserGetResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleGetResponse: AuthResponse {}
extension Etcdserverpb_AuthUserListResponse: AuthResponse {}
extension Etcdserverpb_AuthRoleListResponse: AuthResponse {}

/// A RandomNumberGenerator over the environment's random bits.
struct RandomBits: RandomNumberGenerator {
    let source: @Sendable () -> UInt64
    mutating func next() -> UInt64 { source() }
}

/// Where bcrypt runs: off the raft loop and off Swift's cooperative pool
/// (each hash takes tens of milliseconds at cost 10), at most `width` at
/// once, with at most `maxWaiting` more queued. Past that a request gets
/// "etcdserver: too many requests", which bounds the CPU that Authenticate,
/// UserAdd and UserChangePassword can burn however many clients call them.
final class PasswordWork: Sendable {
    let width: Int
    let maxWaiting: Int
    private let queue = DispatchQueue(label: "etcd-bcrypt", attributes: .concurrent)
    private struct Slots {
        var running = 0
        /// Resumed with true once a slot is handed over.
        var waiting: [CheckedContinuation<Bool, Never>] = []
    }
    private let slots = Mutex(Slots())

    init(width: Int = 2, maxWaiting: Int = 64) {
        self.width = width
        self.maxWaiting = maxWaiting
    }

    func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async throws -> T {
        let admitted = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let answer: Bool? = slots.withLock { slots in
                if slots.running < width {
                    slots.running += 1
                    return true
                }
                guard slots.waiting.count < maxWaiting else { return false }
                slots.waiting.append(continuation)
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
        guard admitted else { throw EtcdError.tooManyRequests }
        defer { release() }
        return await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }

    /// Hands the slot to the next waiter, or frees it.
    private func release() {
        let next = slots.withLock { slots -> CheckedContinuation<Bool, Never>? in
            if slots.waiting.isEmpty {
                slots.running -= 1
                return nil
            }
            return slots.waiting.removeFirst()
        }
        next?.resume(returning: true)
    }
}

/// Authenticate's per-client limit (ours; etcd has none): each client
/// address (its host, any port) has a budget of bcrypt time — at most
/// `capacity` seconds, refilled at `refillPerSecond` — and an attempt
/// starts only while its budget is above zero, reserving the last
/// measured cost and settling on the real one. So one client can keep at
/// most about half a core busy comparing passwords however fast it calls
/// (at `--bcrypt-cost 10` about 8 attempts a second after a burst of
/// about 30), while a client that logs in now and then never notices.
/// Past its budget: "etcdserver: too many requests". At most `maxClients`
/// addresses are tracked; full ones are forgotten first.
final class BcryptBudget: Sendable {
    static let capacity = 2.0
    static let refillPerSecond = 0.5
    static let maxClients = 4096

    struct Ticket {
        let client: String?
        let reserved: Double
    }

    private struct Account {
        var balance: Double
        var updated: Duration
    }

    private struct State {
        var accounts: [String: Account] = [:]
        /// What the last comparison took (reserved at admission).
        var estimate = 0.05
    }

    private let state = Mutex(State())

    /// Admits an attempt from `client` (nil: not limited), or refuses it.
    func admit(_ client: String?, now: Duration) throws(EtcdError) -> Ticket {
        guard let client else { return Ticket(client: nil, reserved: 0) }
        let reserved: Double? = state.withLock { state in
            var account = Self.refilled(state.accounts[client], now: now)
            guard account.balance > 0 else { return nil }
            account.balance -= state.estimate
            if state.accounts[client] == nil && state.accounts.count >= Self.maxClients { Self.forgetFullest(&state, now: now) }
            state.accounts[client] = account
            return state.estimate
        }
        guard let reserved else { throw EtcdError.tooManyRequests }
        return Ticket(client: client, reserved: reserved)
    }

    /// Settles `ticket` on what the comparison really took.
    func charge(_ ticket: Ticket, seconds: Double, now: Duration) {
        state.withLock { state in
            state.estimate = seconds
            guard let client = ticket.client, var account = state.accounts[client] else { return }
            account = Self.refilled(account, now: now)
            account.balance -= seconds - ticket.reserved
            state.accounts[client] = account
        }
    }

    /// The budget left to `client` (for tests).
    func balance(_ client: String, now: Duration) -> Double {
        state.withLock { Self.refilled($0.accounts[client], now: now).balance }
    }

    private static func refilled(_ account: Account?, now: Duration) -> Account {
        guard var account else { return Account(balance: capacity, updated: now) }
        let elapsed = now - account.updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        account.balance = min(capacity, account.balance + max(0, seconds) * refillPerSecond)
        account.updated = now
        return account
    }

    private static func forgetFullest(_ state: inout State, now: Duration) {
        state.accounts = state.accounts.filter { refilled($0.value, now: now).balance < capacity }
        if state.accounts.count >= maxClients, let fullest = state.accounts.max(by: { $0.value.balance < $1.value.balance }) {
            state.accounts[fullest.key] = nil
        }
    }
}
