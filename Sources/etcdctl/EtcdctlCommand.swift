import EtcdClient
import Foundation

/// `etcdctl`: the command-line client, compatible with etcd's v3 etcdctl.
@main
struct EtcdctlCommand {
    static func buildTree() -> Command {
        let root = Command("etcdctl", "A simple command line client for etcd3.")
        root.persistent("endpoints", .stringSlice, "[\(EtcdClientDefaults.endpoint)]", "gRPC endpoints")
        root.persistent("debug", .bool, "false", "enable client-side debug logging")
        root.persistent("write-out", .string, "simple", "set the output format (fields, json, protobuf, simple, table)", short: "w")
        root.persistent("hex", .bool, "false", "print byte strings as hex encoded strings")
        root.persistent("dial-timeout", .duration, "2s", "dial timeout for client connections")
        root.persistent("command-timeout", .duration, "5s", "timeout for short running command (excluding dial timeout)")
        root.persistent("keepalive-time", .duration, "2s", "keepalive time for client connections")
        root.persistent("keepalive-timeout", .duration, "6s", "keepalive timeout for client connections")
        root.persistent("insecure-transport", .bool, "true", "disable transport security for client connections")
        root.persistent("insecure-discovery", .bool, "true", "accept insecure SRV records describing cluster endpoints")
        root.persistent("insecure-skip-tls-verify", .bool, "false", "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)")
        root.persistent("cert", .string, "", "identify secure client using this TLS certificate file")
        root.persistent("key", .string, "", "identify secure client using this TLS key file")
        root.persistent("cacert", .string, "", "verify certificates of TLS-enabled secure servers using this CA bundle")
        root.persistent("user", .string, "", "username[:password] for authentication (prompt if password is not supplied)")
        root.persistent("password", .string, "", "password for authentication (if this option is used, --user option shouldn't include password)")
        root.persistent("discovery-srv", .string, "", "domain name to query for SRV records describing cluster endpoints", short: "d")
        root.persistent("discovery-srv-name", .string, "", "service name to query when using DNS discovery")

        let rawArgs = Array(CommandLine.arguments.dropFirst())
        let g: (Invocation) -> Globals = { inv in Globals(command: inv.command, rawArgs: rawArgs) }
        for c in kvCommands(g) { root.add(c) }
        root.add(watchCommand(g), leaseCommand(g), memberCommand(g), endpointCommand(g), makeMirrorCommand(g), checkCommand(g))
        for c in maintenanceCommands(g) + authCommands(g) + lockElectCommands(g) { root.add(c) }
        root.add(Command("help [command]", "Help about any command") { [unowned root] inv in
            let (target, _) = Cobra.find(root, inv.args)
            Out.print(target.usage(), terminator: "")
        })
        root.add(Command("version", "Prints the version of etcdctl") { _ in
            Out.print("etcdctl version: \(etcdctlVersion)")
            Out.print("API version: \(apiVersion)")
        })
        return root
    }

    static func main() async {
        let root = buildTree()
        let args = Array(CommandLine.arguments.dropFirst())
        let code = await execute(root, args)
        exit(code)
    }

    static func execute(_ root: Command, _ args: [String]) async -> Int32 {
        let (command, rest) = Cobra.find(root, args)
        if command === root, let word = Cobra.stripFlags(rest, root).first {
            Out.err("Error: unknown command \(goQuote(word)) for \"etcdctl\"")
            Out.err("Run 'etcdctl --help' for usage.")
            Out.err("Error: unknown command \(goQuote(word)) for \"etcdctl\"")
            return ExitCode.error
        }
        let positional: [String]
        do {
            positional = try Cobra.parseFlags(command, rest)
        } catch let e as FlagError {
            Out.err("Error: \(e.message)")
            Out.print(command.usage(), terminator: "")
            Out.err("")
            Out.err("Error: \(e.message)")
            return ExitCode.error
        } catch { return ExitCode.error }
        if command.helpFlag.bool || command.run == nil {
            Out.print(command.usage(), terminator: "")
            return 0
        }
        do {
            try await command.run!(Invocation(command: command, args: positional, rawArgs: args))
            return 0
        } catch let exit as Exit {
            return exit.code
        } catch {
            Out.err("Error: \(EtcdClientError(error))")
            return ExitCode.error
        }
    }
}
