import DiagPlugin

@_cdecl("csop_plugin_register")
public func csopPluginRegister() -> UnsafeRawPointer { diagPluginDescriptor() }
