import CSOPHost

// The host's Request and Response, under names that Hummingbird's own do not shadow.
typealias CSOPRequest = Request
typealias CSOPResponse = Response
