import SwiftProtobuf

/// A flattened view of a protobuf schema: everything wire compatibility and
/// the JSON gateway depend on, keyed by fully qualified name.
struct SchemaModel {
    struct Field: Equatable, CustomStringConvertible {
        var name: String
        var number: Int32
        var type: Google_Protobuf_FieldDescriptorProto.TypeEnum
        var typeName: String
        var label: Google_Protobuf_FieldDescriptorProto.Label
        var jsonName: String
        var oneof: String?

        var description: String {
            let kind = typeName.isEmpty ? "\(type)" : "\(type) \(typeName)"
            let inOneof = oneof.map { " in oneof \($0)" } ?? ""
            return "\(label) \(kind) \(name) = \(number) (json \(jsonName))\(inOneof)"
        }
    }

    struct Method: Equatable, CustomStringConvertible {
        var input: String
        var output: String
        var clientStreaming: Bool
        var serverStreaming: Bool

        var description: String {
            "(\(clientStreaming ? "stream " : "")\(input)) returns (\(serverStreaming ? "stream " : "")\(output))"
        }
    }

    /// message name -> field name -> field
    var messages: [String: [String: Field]] = [:]
    /// enum name -> value name -> number
    var enums: [String: [String: Int32]] = [:]
    /// service name -> method name -> method
    var services: [String: [String: Method]] = [:]

    init() {}

    init(_ set: Google_Protobuf_FileDescriptorSet) {
        for file in set.file {
            let prefix = file.package.isEmpty ? "" : "." + file.package
            for message in file.messageType { add(message, scope: prefix) }
            for enumType in file.enumType { add(enumType, scope: prefix) }
            for service in file.service {
                var methods: [String: Method] = [:]
                for method in service.method {
                    methods[method.name] = Method(
                        input: method.inputType,
                        output: method.outputType,
                        clientStreaming: method.clientStreaming,
                        serverStreaming: method.serverStreaming
                    )
                }
                services[prefix + "." + service.name] = methods
            }
        }
    }

    private mutating func add(_ message: Google_Protobuf_DescriptorProto, scope: String) {
        let name = scope + "." + message.name
        var fields: [String: Field] = [:]
        for field in message.field {
            let oneof = field.hasOneofIndex ? message.oneofDecl[Int(field.oneofIndex)].name : nil
            fields[field.name] = Field(
                name: field.name,
                number: field.number,
                type: field.type,
                typeName: field.typeName,
                label: field.label,
                jsonName: field.jsonName,
                oneof: oneof
            )
        }
        messages[name] = fields
        for nested in message.nestedType { add(nested, scope: name) }
        for nested in message.enumType { add(nested, scope: name) }
    }

    private mutating func add(_ enumType: Google_Protobuf_EnumDescriptorProto, scope: String) {
        var values: [String: Int32] = [:]
        for value in enumType.value { values[value.name] = value.number }
        enums[scope + "." + enumType.name] = values
    }

    /// Every difference that makes `self` not a superset of `reference`:
    /// each service, method, message, field and enum value there must exist
    /// here, identically. Additions on our side are allowed.
    func differences(from reference: SchemaModel) -> [String] {
        var out: [String] = []
        for (service, methods) in reference.services.sorted(by: { $0.key < $1.key }) {
            guard let ours = services[service] else { out.append("missing service \(service)"); continue }
            for (name, method) in methods.sorted(by: { $0.key < $1.key }) {
                guard let mine = ours[name] else { out.append("missing method \(service).\(name)"); continue }
                if mine != method { out.append("method \(service).\(name): etcd \(method), ours \(mine)") }
            }
        }
        for (message, fields) in reference.messages.sorted(by: { $0.key < $1.key }) {
            guard let ours = messages[message] else { out.append("missing message \(message)"); continue }
            for (name, field) in fields.sorted(by: { $0.key < $1.key }) {
                guard let mine = ours[name] else { out.append("missing field \(message).\(name)"); continue }
                if mine != field { out.append("field \(message).\(name): etcd \(field), ours \(mine)") }
            }
        }
        for (enumName, values) in reference.enums.sorted(by: { $0.key < $1.key }) {
            guard let ours = enums[enumName] else { out.append("missing enum \(enumName)"); continue }
            for (name, number) in values.sorted(by: { $0.key < $1.key }) {
                guard let mine = ours[name] else { out.append("missing enum value \(enumName).\(name)"); continue }
                if mine != number { out.append("enum value \(enumName).\(name): etcd \(number), ours \(mine)") }
            }
        }
        return out
    }
}
