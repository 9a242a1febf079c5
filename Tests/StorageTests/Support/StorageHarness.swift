import CSOPCore
import CSOPTestSupport
@testable import StoragePlugin

extension PluginHarness {
    /// A storage plugin instance driven through its C descriptor.
    convenience init(config: JSONValue) throws(CSOPError) {
        try self.init(descriptor: storagePluginDescriptor(), config: config)
    }
}
