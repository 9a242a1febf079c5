// TEMPORARY until the tenant branch lands: Caller and the caller-aware dispatch.
import CSOPCore
import CSOPHost

struct Caller: Sendable, Hashable {
    var subject: String
    var tenant: String
    var actions: [String]
}

extension Principal {
    var caller: Caller { Caller(subject: subject, tenant: tenant, actions: actions) }
}

extension CSOPHost {
    func dispatch(json bytes: [UInt8], caller: Caller?, completion: @escaping @Sendable (Response) -> Void) {
        dispatch(json: bytes, completion: completion)
    }

    func dispatch(_ request: Request, caller: Caller?, completion: @escaping @Sendable (Response) -> Void) {
        dispatch(request, completion: completion)
    }
}
